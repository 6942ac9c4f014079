"""seqnb.papers.gemma_encoder: pooling, masks, model classes, losses, evaluation, data and explorer (notebook 05), and an
offline rehearsal of the paper preset on tiny local copies of GLUE and MS MARCO in the hub's layout."""

import gc
import math
import random
import weakref
from types import SimpleNamespace

import datasets
from datasets import Dataset
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

from seqnb.config import ConfigError
from seqnb.papers import resolve_config
from seqnb.papers.gemma_encoder.method import GemmaEncoderConfig
from seqnb.papers.gemma_encoder.method import GemmaEncoderModel
from seqnb.papers.gemma_encoder.pooling import Pooler
from seqnb.papers.gemma_encoder.masks import mask_matrix
from seqnb.papers.gemma_encoder.masks import prebuilt_bidirectional_mask
from seqnb.papers.gemma_encoder.masks import probe_influence
from seqnb.papers.gemma_encoder.masks import set_attention
from seqnb.papers.gemma_encoder import experiment as ex
from seqnb.papers.gemma_encoder import hub_data as paper
from seqnb.papers.gemma_encoder.data import EncoderCollator, lm_stream, sentence_position_set
from seqnb.papers.gemma_encoder.evaluation import classification_metrics, group_mrr, regression_metrics, retrieval_metrics
from seqnb.papers.gemma_encoder.experiment import Arm, default_arms
from seqnb.papers.gemma_encoder.views import PairExplorer, compare, comparison_html
from seqnb.papers.gemma_encoder.losses import classification_loss, in_batch_contrastive_loss, listwise_loss, regression_loss
from seqnb.papers.gemma_encoder.pooling import LearnableTokens
from seqnb.standins import write_dataset_standins
from seqnb.tokenizers import word_tokenizer

LENGTHS = (3, 5)


def padded_batch(side: str, d: int = 3):
    """Two rows of lengths 3 and 5 in a width-5 batch; the real token of rank r in row b has value 10b + r + 1."""
    h, mask = torch.zeros(2, 5, d), torch.zeros(2, 5, dtype=torch.long)
    for b, n in enumerate(LENGTHS):
        start = 5 - n if side == "left" else 0
        for r in range(n):
            h[b, start + r] = 10 * b + r + 1
            mask[b, start + r] = 1
    return h, mask


def expected(values_of_rank):
    return torch.tensor([[values_of_rank(b, n)] * 3 for b, n in enumerate(LENGTHS)], dtype=torch.float)


def value(b, r):
    return 10 * b + r + 1


HAND_COMPUTED = {
    ("first_k", 1): lambda b, n: value(b, 0),
    ("first_k", 2): lambda b, n: (value(b, 0) + value(b, 1)) / 2,
    ("last_k", 1): lambda b, n: value(b, n - 1),
    ("last_k", 2): lambda b, n: (value(b, n - 1) + value(b, n - 2)) / 2,
    ("mean", 1): lambda b, n: sum(value(b, r) for r in range(n)) / n,
    ("weighted_mean", 1): lambda b, n: sum((r + 1) * value(b, r) for r in range(n)) / sum(range(1, n + 1)),
}


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("strategy,k", list(HAND_COMPUTED))
def test_pooling_matches_hand_computed_values_on_either_padding_side(strategy, k, side):
    h, mask = padded_batch(side)
    assert torch.allclose(Pooler(strategy, 3, k=k)(h, mask), expected(HAND_COMPUTED[(strategy, k)]))


def test_naive_pooling_is_right_only_on_its_own_padding_side():
    for side, strategy, correct in (("left", "last_naive", True), ("right", "last_naive", False),
                                    ("right", "first_naive", True), ("left", "first_naive", False)):
        h, mask = padded_batch(side)
        rank_based = Pooler("last_k" if strategy == "last_naive" else "first_k", 3)(h, mask)
        assert torch.equal(Pooler(strategy, 3)(h, mask), rank_based) == correct, (side, strategy)


def test_attention_query_pooling_ignores_pads_and_padding_side():
    torch.manual_seed(0)
    pool = Pooler("attn_query", 8, num_probes=2, num_heads=2)
    out, offset = {}, torch.randn(8)
    for side in ("right", "left"):
        h, mask = padded_batch(side, d=8)
        h = h * torch.linspace(0.5, 1.5, 8) + offset * mask[..., None]  # varied features, same on both sides
        out[side] = pool(h, mask)
        w = pool.attention.weights
        assert w.shape == (2, 2, 2, 5)
        assert torch.all(w.masked_select(mask[:, None, None, :] == 0) == 0)
        assert torch.allclose(w.sum(-1), torch.ones(2, 2, 2))
    assert torch.allclose(out["right"], out["left"], atol=1e-5)


def test_kv_probe_pooling_is_padding_invariant():
    torch.manual_seed(0)
    pool = Pooler("attn_kv", 3, kv_probes=4)
    torch.nn.init.normal_(pool.attention.values)
    assert torch.allclose(pool(*padded_batch("right")), pool(*padded_batch("left")), atol=1e-5)


def test_kv_probe_pooling_at_its_default_is_not_mean_plus_a_constant():
    """Default attn_kv (8 probes, also through the model) is not masked mean + one vector; W_q and K_p train."""
    torch.manual_seed(0)
    pool = Pooler("attn_kv", 8, num_probes=1)  # num_probes is attn_query's; the model passes it (1 by default)
    torch.nn.init.normal_(pool.attention.values)  # as after a first update (V_p starts at 0)
    h, mask = torch.randn(3, 5, 8), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 1, 1, 1]])
    shift = pool(h, mask) - Pooler("mean", 8)(h, mask)
    assert (shift - shift[0]).abs().amax() > 1e-2  # one probe: 0 up to rounding
    pool(h, mask).square().sum().backward()
    assert pool.attention.keys.grad.abs().amax() > 0 and pool.attention.query.weight.grad.abs().amax() > 0
    model = GemmaEncoderModel.from_decoder(tiny_gemma3(), pooling="attn_kv", num_labels=2)
    assert model.pooler.attention.keys.shape == (8, 32)


def test_attention_query_pooling_matches_explicit_projections():
    """attn_query equals a hand-written loop over rows, queries and heads with the module's W_k, W_v, W_o."""
    torch.manual_seed(0)
    d, heads, queries, dh = 8, 2, 2, 4
    pool = Pooler("attn_query", d, num_probes=queries, num_heads=heads).attention
    h, mask = torch.randn(2, 4, d), torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    want = []
    for b in range(2):
        real = h[b, mask[b].bool()]
        keys, values = real @ pool.key.weight.T, real @ pool.value.weight.T
        parts = []
        for p in range(queries):
            for i in range(heads):
                cols = slice(i * dh, (i + 1) * dh)
                weights = torch.softmax(keys[:, cols] @ pool.queries[p, cols] / math.sqrt(dh), 0)
                parts.append(weights @ values[:, cols])
        want.append(pool.out.weight @ torch.cat(parts))
    assert torch.allclose(pool(h, mask), torch.stack(want), atol=1e-6)


def test_learnable_tokens_are_inserted_after_the_last_real_token():
    tokens = LearnableTokens(3, 2)
    for side in ("right", "left"):
        h, mask = padded_batch(side)
        embeds, new_mask, probe = tokens(h, mask)
        assert embeds.shape == (2, 7, 3) and new_mask.sum(-1).tolist() == [5, 7]
        for b in range(2):
            real = new_mask[b].nonzero().flatten()
            assert probe[b, real[-2:]].tolist() == [1, 1]  # the last two real positions are the probes
            assert torch.equal(embeds[b, real[-2:]], tokens.embeddings.detach())


def tiny_gemma3(**kw):
    config = Gemma3TextConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=8, intermediate_size=64, query_pre_attn_scalar=8,
                              max_position_embeddings=64, layer_types=["sliding_attention", "full_attention"],
                              sliding_window=16, pad_token_id=0, **kw)
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config)


def tiny_gemma2_config():
    return Gemma2Config(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=8, intermediate_size=64, query_pre_attn_scalar=8,
                        max_position_embeddings=64, sliding_window=16, pad_token_id=0)


@pytest.mark.parametrize("family", ["gemma3", "gemma2"])
@pytest.mark.parametrize("padded", [False, True])
def test_bidirectional_mask_lets_early_tokens_see_later_ones(family, padded):
    ids = torch.arange(4, 12)[None].repeat(1, 1)
    mask = torch.ones_like(ids)
    if padded:
        ids, mask = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1), torch.cat([mask, torch.zeros(1, 3)], 1)
    for mode in ("causal", "bidirectional"):
        config = tiny_gemma3().config if family == "gemma3" else tiny_gemma2_config()
        torch.manual_seed(0)
        backbone = AutoModel.from_config(set_attention(config, mode), attn_implementation="eager")
        delta = probe_influence(backbone, ids, position=7, new_token=30, attention_mask=mask.long())
        if mode == "bidirectional":
            assert delta[0] > 1e-3, family
        else:
            assert delta[:7].max() < 1e-6, family


def test_library_masks_causal_vs_bidirectional_and_pads_never_attended():
    config = tiny_gemma3().config
    for side in ("right", "left"):
        mask = torch.tensor([[0, 0, 1, 1, 1]]) if side == "left" else torch.tensor([[1, 1, 1, 0, 0]])
        pads = mask[0] == 0
        for mode in ("causal", "bidirectional"):
            m = mask_matrix(config, mask, mode)[0]
            assert not m[:, pads].any(), (side, mode)
            first_real = int((~pads).nonzero()[0])
            sees_later = m[first_real, first_real + 1:].any()
            assert bool(sees_later) == (mode == "bidirectional")
    assert torch.equal(mask_matrix(config, torch.ones(1, 4, dtype=torch.long), "causal")[0],
                       torch.ones(4, 4).tril().bool())


@pytest.mark.parametrize("family,length", [("gemma3", 7), ("gemma2", 7), ("gemma2", 20)])
def test_the_prebuilt_bidirectional_mask_gives_the_states_of_the_backbones_own_masks(family, length):
    """The encoder hands a bidirectional backbone one mask built by broadcasting; the pooled states must be those
    of the backbone's own mask functions (rows padded differently). Gemma 2's sliding window (16) is shorter
    than 20 tokens: there the backbone builds its own masks."""
    torch.manual_seed(0)
    decoder = tiny_gemma3() if family == "gemma3" else Gemma2ForCausalLM(tiny_gemma2_config())
    model = GemmaEncoderModel.from_decoder(decoder, attention="bidirectional", pooling="mean", num_labels=2).eval()
    ids = torch.randint(4, 30, (3, length))
    mask = torch.ones_like(ids)
    mask[1, length - 3:], mask[2, :2] = 0, 0  # right padding, left padding
    embeds = model.backbone.embed_tokens(ids)
    prebuilt = prebuilt_bidirectional_mask(model.backbone.config, embeds, mask)
    assert (prebuilt is None) == (length > 16)
    with torch.no_grad():
        own = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = model(input_ids=ids, attention_mask=mask).pooled
    expected_pooled = (own * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(pooled, expected_pooled, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_real_token_states_do_not_depend_on_the_padding_side(mode):
    torch.manual_seed(0)
    backbone = AutoModel.from_config(set_attention(tiny_gemma3().config, mode)).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
    right = backbone(input_ids=ids, attention_mask=(ids > 0).long()).last_hidden_state
    left_ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 5, 6, 7]])
    left = backbone(input_ids=left_ids, attention_mask=(left_ids > 0).long()).last_hidden_state
    assert torch.allclose(right[1, :3], left[1, 2:], atol=1e-4)


def test_save_load_round_trip(tmp_path):
    decoder = tiny_gemma3()
    model = GemmaEncoderModel.from_decoder(decoder, attention="bidirectional", pooling="attn_query", num_labels=3,
                                           num_probes=2, encoder_dropout=0.1).eval()
    assert torch.equal(model.backbone.embed_tokens.weight, decoder.model.embed_tokens.weight)
    ids = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 0]])
    logits = model(ids, (ids > 0).long()).logits
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, GemmaEncoderModel)
    assert (loaded.config.attention, loaded.config.pooling, loaded.config.num_labels) == ("bidirectional", "attn_query", 3)
    assert loaded.config.backbone_config.sliding_window == decoder.config.sliding_window
    assert loaded.backbone.config.is_causal is False and len(loaded.dropout_hooks) == 4
    assert torch.equal(loaded(ids, (ids > 0).long()).logits, logits)


@pytest.mark.parametrize("side", ["right", "left"])
def test_learnable_tokens_through_the_model(side):
    """Via the model: text, tokens, then pads (mask +2); pooled = the tokens' mean; follows the text; tokens train."""
    model = GemmaEncoderModel.from_decoder(tiny_gemma3(), attention="causal", pooling="learnable_tokens",
                                           num_probes=2, num_labels=2)
    ids = torch.tensor([[1, 5, 6, 0, 0] if side == "right" else [0, 0, 1, 5, 6], [1, 7, 8, 9, 10]])
    seen = {}
    model.backbone.register_forward_pre_hook(lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)
    out = model(ids, (ids > 0).long(), labels=torch.tensor([0, 1]))
    embeds, mask = seen["inputs_embeds"], seen["attention_mask"]
    slots = torch.cat([model.backbone.embed_tokens(ids), model.tokens.embeddings.expand(2, 2, 32)], 1)  # 5, 6: tokens
    order = torch.tensor([[0, 1, 2, 5, 6, 3, 4] if side == "right" else [0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6]])
    assert torch.equal(embeds, slots[torch.arange(2)[:, None], order])
    assert mask.tolist() == [[1] * 5 + [0] * 2 if side == "right" else [0] * 2 + [1] * 5, [1] * 7]
    states = model.backbone(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    assert torch.allclose(out.pooled, states[order >= 5].view(2, 2, 32).mean(1), atol=1e-6)
    other = ids.clone()
    other[:, -3] = 11  # a text token of both rows
    assert (model(other, (other > 0).long()).pooled - out.pooled).norm(dim=-1).min() > 1e-3
    out.loss.backward()
    assert (model.tokens.embeddings.grad.abs().sum(-1) > 0).all()


def test_dropout_is_active_in_training_only():
    model = GemmaEncoderModel.from_decoder(tiny_gemma3(), pooling="mean", num_labels=2, encoder_dropout=0.1)
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)
    assert GemmaEncoderModel.from_decoder(tiny_gemma3(), encoder_dropout=0.0).dropout_hooks == []


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_residual_dropout_keeps_each_branch_on_its_eval_scale(family):
    """Residual dropout acts on what each branch adds to the residual stream (after Gemma's post-norms, as T5Gemma
    places it), so averaged over masks a branch's training output equals its evaluation output."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if family == "gemma3":
        decoder = tiny_gemma3()
    else:
        torch.manual_seed(0)
        decoder = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    model = GemmaEncoderModel.from_decoder(decoder, pooling="mean", num_labels=2, encoder_dropout=0.5)
    layer = model.backbone.layers[0]
    branch = layer.post_attention_layernorm if family == "gemma3" else layer.self_attn
    seen = []
    branch.register_forward_hook(lambda m, a, out: seen.append((out[0] if isinstance(out, tuple) else out).detach()))
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    for sub in (m for m in model.backbone.modules() if hasattr(m, "attention_dropout")):
        sub.attention_dropout = 0.0  # only residual dropout acts: layer 0's branch input is the same in every pass
    with torch.no_grad():
        model.eval()(ids)
        evaluated = seen.pop()
        model.train()
        for _ in range(600):
            model(ids)
    trained = torch.stack(seen).mean(0)
    assert (trained - evaluated).norm() / evaluated.norm() < 0.1  # before Gemma's post-norm: about 0.3 off


def test_pooling_spread_leaves_first_k_out():
    """max - min over the poolers other than first-K, per mask, only with three of them or more."""
    acc = {"first_k1": 0.5, "last_k1": 0.7, "mean": 0.9, "attn_query": 0.8}
    results = {f"causal|{p}": {"acc": a} for p, a in acc.items()}
    results |= {f"bidirectional|{p}": {"acc": a + 0.1} for p, a in acc.items() if p != "attn_query"}
    spread = ex.with_pooling_spread(results, "acc")
    assert spread["causal"]["pooling_spread"] == pytest.approx(0.2)  # 0.9 - 0.7; first_k1 at 0.5 left out
    assert "bidirectional" not in spread  # two poolers besides first-K


def test_model_losses_by_head_type():
    """Each head's loss on rows that differ: ranking groups are consecutive rows (0, 1, 2) and (3, 4, 5)."""
    decoder = tiny_gemma3()
    ids = torch.arange(1, 25).view(6, 4)
    targets = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    out = GemmaEncoderModel.from_decoder(decoder, head_type="regression")(ids, labels=targets)
    assert torch.allclose(out.loss, F.mse_loss(out.logits.squeeze(-1), targets))
    rank = GemmaEncoderModel.from_decoder(decoder, head_type="ranking", group_size=3)
    out = rank(ids, labels=torch.tensor([0, 0, 1, 0, 1, 0]))
    s = out.logits.squeeze(-1)
    assert torch.allclose(out.loss, F.cross_entropy(torch.stack([s[:3], s[3:]]), torch.tensor([2, 1])))
    emb = GemmaEncoderModel.from_decoder(decoder, head_type="embedding").eval()
    assert torch.allclose(emb(ids).logits.norm(dim=-1), torch.ones(6))


def test_losses_on_hand_computed_cases():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    want = -(F.log_softmax(logits, -1)[0, 0] + F.log_softmax(logits, -1)[1, 1]) / 2
    assert torch.isclose(classification_loss(logits, torch.tensor([0, 1])), want)
    assert torch.isclose(regression_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])), torch.tensor(2.5))
    scores = torch.tensor([[3.0, 1.0, 0.0]])
    assert torch.isclose(listwise_loss(scores, torch.tensor([[1, 0, 0]])), -F.log_softmax(scores, -1)[0, 0])
    q, p = F.normalize(torch.randn(4, 5), dim=-1), F.normalize(torch.randn(4, 5), dim=-1)
    assert torch.isclose(in_batch_contrastive_loss(q, p, 0.05), F.cross_entropy(q @ p.T / 0.05, torch.arange(4)))


def test_listwise_loss_on_groups_that_differ():
    """Listwise loss on two different groups (one positive; graded relevance 2:0:1) equals the hand-computed mean."""
    scores = [[3.0, 1.0, 0.0], [0.5, 2.0, -1.0]]

    def log_p(row, j):
        return row[j] - math.log(sum(math.exp(s) for s in row))

    want = (-log_p(scores[0], 2) - (2 / 3 * log_p(scores[1], 0) + 1 / 3 * log_p(scores[1], 2))) / 2
    loss = listwise_loss(torch.tensor(scores), torch.tensor([[0, 0, 1], [2, 0, 1]]))
    assert loss.item() == pytest.approx(want, rel=1e-6)


def test_retrieval_evaluator_counts_ties_against_the_query():
    constant = torch.ones(100, 4)
    assert retrieval_metrics(constant, constant)["mrr10"] == 0.0
    perfect = torch.eye(20)
    assert retrieval_metrics(perfect, perfect) == {"mrr10": 1.0, "r1": 1.0}
    assert group_mrr(torch.zeros(3, 4), torch.tensor([[1, 0, 0, 0]] * 3)) == 0.25
    assert group_mrr(torch.tensor([[0.0, 2.0, 1.0]]), torch.tensor([[0, 0, 1]])) == 0.5


def test_collator_pads_either_side_and_cuts_reproducibly():
    rows = [{"input_ids": list(range(1, 11)), "labels": 0}, {"input_ids": [1, 2, 3], "labels": 1}]
    right = EncoderCollator(0, "right")(rows)
    left = EncoderCollator(0, "left")(rows)
    assert right["input_ids"][1].tolist() == [1, 2, 3] + [0] * 7 and left["input_ids"][1].tolist() == [0] * 7 + [1, 2, 3]
    assert right["attention_mask"].sum().item() == left["attention_mask"].sum().item() == 13
    cut = EncoderCollator(0, "right", min_len=4)
    assert torch.equal(cut(rows)["input_ids"], cut(rows)["input_ids"])
    assert 4 <= cut(rows)["attention_mask"][0].sum() <= 10
    groups = EncoderCollator(0)([{"input_ids": [[1, 2], [1, 3, 4]], "labels": [1, 0]}])
    assert groups["input_ids"].shape == (2, 3) and groups["labels"].tolist() == [1, 0]


def test_sentence_position_targets():
    from datasets import Dataset

    bodies = ["Rates rose. Banks said so! Who knew? \"Nobody\", he said.", "Too short. Two.", "A b. C d. E f."]
    tok = word_tokenizer(bodies, 100)
    rows = sentence_position_set(Dataset.from_dict({"body": bodies}), tok, 32, seed=0)
    assert len(rows) == 2  # the two-sentence body is skipped
    again = sentence_position_set(Dataset.from_dict({"body": bodies}), tok, 32, seed=0)
    assert rows["labels"] == again["labels"] and rows["input_ids"] == again["input_ids"]
    first = tok.decode(rows[0]["input_ids"], skip_special_tokens=True)
    sentences = ["rates rose .", "banks said so !", "who knew ?", "\" nobody \" , he said ."]
    assert rows[0]["labels"] == pytest.approx(sentences.index(first) / 3)
    assert {rows[1]["labels"]} <= {0.0, 0.5, 1.0}


def test_word_tokenizer_and_lm_stream():
    tok = word_tokenizer(["The cat sat.", "The dog sat, then ran!"] * 3, vocab_size=12)
    assert tok.convert_ids_to_tokens(tok("The cat")["input_ids"]) == ["<bos>", "the", "cat"]
    rows = lm_stream(["the cat sat . the dog sat"] * 4, tok, length=5)
    assert all(len(r) == 5 and r[0] == tok.bos_token_id for r in rows["input_ids"])


def test_bad_parameters_raise_clear_errors():
    with pytest.raises(ValueError, match="pooling"):
        GemmaEncoderConfig(pooling="max")
    with pytest.raises(ValueError, match="attention"):
        GemmaEncoderConfig(attention="sideways")
    with pytest.raises(ValueError, match="encoder_dropout"):
        GemmaEncoderConfig(encoder_dropout=1.5)
    with pytest.raises(ValueError, match="pooling_k"):
        Pooler("first_k", 4, k=0)
    with pytest.raises(ValueError, match="padding_side"):
        EncoderCollator(0, "middle")
    with pytest.raises(ValueError, match="attention"):
        set_attention(tiny_gemma2_config(), "both")
    with pytest.raises(ConfigError, match="padding_side"):
        resolve_config("05_gemma_encoder", "tiny", padding_side="top")


def test_default_grid_and_arm_names():
    cfg = resolve_config("05_gemma_encoder", "tiny", output_dir="/tmp/unused")
    names = [a.name for a in default_arms(cfg)]
    assert {"causal|first_k1", "bidirectional|first_k1", "bidirectional|mean|p0.1", "causal|last_naive",
            "retrieval|bidirectional|mean", "retrieval|bidirectional|last_k1", "regression|causal|mean",
            "regression|bidirectional|mean"} <= set(names)
    assert Arm("causal", "last_naive", padding_side="left", eval_padding_side="right").name == \
        "causal|last_naive|train=left|eval=right"
    assert Arm("causal", "first_k4").encoder_kwargs()["pooling_k"] == 4
    full = resolve_config("05_gemma_encoder", "tiny", output_dir="/tmp/unused", full_grid=True)
    assert {"causal|attn_kv", "bidirectional|attn_query"} <= {a.name for a in default_arms(full)}


def test_explorer_shows_topics_and_similarity():
    decoder = tiny_gemma3()
    tok = word_tokenizer(["stocks fell sharply", "the team won the cup"] * 5, vocab_size=40)
    classifier = GemmaEncoderModel.from_decoder(decoder, num_labels=2)
    embedder = GemmaEncoderModel.from_decoder(decoder, head_type="embedding")
    c = compare("stocks fell", "stocks fell", classifier, embedder, tok, ["business", "sport"], 16)
    assert c.topics[0] == c.topics[1] and c.similarity == pytest.approx(1.0, abs=1e-5)
    assert sum(c.probabilities[0].values()) == pytest.approx(1.0)
    w = PairExplorer(lambda a, b: comparison_html(compare(a, b, classifier, embedder, tok, ["business", "sport"], 16)))
    assert "similarity" in w.ask("the team won", "stocks fell") and "both boxes" in w.ask("", "x")


# --- the paper preset, rehearsed offline ---------------------------------------------------------------------------
# Local copies of nyu-mll/glue and microsoft/ms_marco (v1.1) in the hub repositories' own layout and schema
# (seqnb.standins), passed as `dataset_dir`.

PAPER_TASKS = ("sst2", "mrpc", "stsb", "rte", "cola", "qnli", "qqp", "mnli", "msmarco")
WORDS = ("the a film bank shares fell rose team won cup what is how many who said was not very good bad it "
         "this that rates market game players city police new year people").split()


def write_tiny_gemma2(root) -> str:
    """A random 2-layer Gemma 2 decoder (eager attention) and a word tokenizer, saved as a model folder."""
    from seqnb.tokenizers import word_tokenizer

    tok = word_tokenizer([" ".join(WORDS)] * 2, vocab_size=200)
    config = Gemma2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=8, intermediate_size=64, query_pre_attn_scalar=8,
                          max_position_embeddings=256, sliding_window=16, pad_token_id=tok.pad_token_id,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, attn_implementation="eager")
    torch.manual_seed(0)
    Gemma2ForCausalLM(config).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


@pytest.fixture(scope="module")
def paper_assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    with pytest.MonkeyPatch.context() as mp:  # keep the Arrow caches of these folders out of ~/.cache
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", root / "hf_cache")
        written = write_dataset_standins(root / "mirror", ["nyu-mll/glue", "microsoft/ms_marco"], rows=20)
        yield SimpleNamespace(model=write_tiny_gemma2(root / "gemma2"), glue=str(written["nyu-mll/glue"]),
                              msmarco=str(written["microsoft/ms_marco"]))


def checkpointed(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def paper_config(task: str, tmp_path, **overrides):
    values = dict(task=task, device="cpu", precision="bf16", output_dir=str(tmp_path / task), max_len=48,
                  num_threads=2, max_steps=1, lr=1e-3, warmup_steps=0)
    return resolve_config("05_gemma_encoder", "paper", **{**values, **overrides})


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_paper_preset_rehearsal_load_collate_one_step_and_metric(task, paper_assets, tmp_path):
    """Each task of the paper preset, end to end on the local folders: `paper.hub_setup` (dataset_dir), the
    training collator, one optimizer step (4 micro-batches, gradient checkpointing, bf16 autocast on the CPU) and
    the task's headline metric."""
    data_dir = paper_assets.msmarco if task == "msmarco" else paper_assets.glue
    cfg = paper_config(task, tmp_path, model_name=paper_assets.model, dataset_dir=data_dir)
    assert (cfg.batch_size, cfg.grad_accum, cfg.gradient_checkpointing) == (8, 4, True)
    decoder, tokenizer, sets = paper.hub_setup(cfg)
    assert decoder.dtype == torch.float32 and type(decoder).__name__ == "Gemma2ForCausalLM"
    if task == "msmarco":  # queries without a selected passage are dropped
        raw = datasets.load_dataset(data_dir, "v1.1")
        answered = {s: sum(1 in r["is_selected"] for r in raw[s]["passages"]) for s in ("train", "validation")}
        assert 0 < answered["train"] < len(raw["train"])
        assert (len(sets["train"]), len(sets["test"])) == (answered["train"], answered["validation"])
        assert all(len(g) == cfg.group_size for g in sets["train"]["input_ids"])
    else:
        assert len(sets["train"]) == len(sets["test"]) == 20
    arm = Arm("bidirectional", "mean")
    batch = EncoderCollator(tokenizer.pad_token_id, min_len=ex.training_cut(arm, cfg))(
        [sets["train"][i] for i in range(2)])
    rows = 2 * cfg.group_size if task == "msmarco" else 2
    assert batch["input_ids"].shape[0] == rows and batch["attention_mask"].sum(-1).min() > 3
    before = decoder.model.layers[0].mlp.down_proj.weight.detach().clone()
    run = ex.fine_tune(arm, decoder, tokenizer, sets, cfg, seed=0)
    assert checkpointed(run.model.backbone)
    assert not torch.equal(run.model.backbone.layers[0].mlp.down_proj.weight.detach(), before)  # it trained
    assert math.isfinite(run.history.last("loss"))
    checkpoints = list((cfg.run_dir / "checkpoints").glob("*/step_*"))
    assert len(checkpoints) == 1  # one checkpoint per arm
    metrics = ex.evaluate_arm(arm, run.model, tokenizer, sets)
    headline = ex.main_metric(cfg)
    assert headline == {"cola": "mcc", "stsb": "pearson", "msmarco": "mrr10"}.get(task, "acc")
    assert math.isfinite(metrics[headline])


def test_paper_dataset_dir_save_to_disk_copy_and_wrong_task(paper_assets, tmp_path):
    """The offline advice (`load_dataset(...).save_to_disk(DIR)`, then -p dataset_dir DIR) works, and a copy of
    another task is refused naming dataset_dir."""
    saved = str(tmp_path / "rte_copy")
    datasets.load_dataset(paper_assets.glue, "rte").save_to_disk(saved)
    _, _, sets = paper.hub_setup(paper_config("rte", tmp_path, model_name=paper_assets.model, dataset_dir=saved))
    assert len(sets["train"]) == 20
    with pytest.raises(ConfigError, match="dataset_dir"):
        paper.hub_setup(paper_config("qqp", tmp_path, model_name=paper_assets.model, dataset_dir=saved))


def test_paper_offline_error_names_dataset_dir(paper_assets, tmp_path):
    with pytest.raises(Exception, match="dataset_dir") as info:
        paper.hub_setup(paper_config("sst2", tmp_path, model_name=paper_assets.model))
    assert "'task'" not in str(info.value)


def test_paper_training_collator_never_cuts_a_pair(monkeypatch, tmp_path):
    """B1: only the BBC topic arms are cut at training time; every paper arm keeps both sentences of a pair."""
    from seqnb.tokenizers import word_tokenizer

    first, second = " ".join(["alpha"] * 30), " ".join(["omega"] * 30)  # the second sentence comes last
    tok = word_tokenizer([first, second], vocab_size=20)
    pair = {"input_ids": paper.encode_texts([f"{first}\n{second}"], tok, 256)[0], "labels": 1}
    sets = {"train": Dataset.from_list([pair] * 8), "test": Dataset.from_list([pair, {**pair, "labels": 0}])}
    collators = []
    monkeypatch.setattr(ex, "train", lambda model, data, cfg, *, collate_fn, **kw: collators.append(collate_fn))
    cfg = paper_config("mrpc", tmp_path)
    decoder = tiny_gemma3()
    for arm in default_arms(cfg):
        ex.fine_tune(arm, decoder, tok, sets, cfg, seed=0)
    assert len(collators) == len(default_arms(cfg)) >= 10
    omega = tok.convert_tokens_to_ids("omega")
    for collate in collators:
        for _ in range(5):  # batches of different content draw different cuts (when cutting)
            batch = collate([pair] * 8)
            assert batch["attention_mask"].sum(-1).tolist() == [len(pair["input_ids"])] * 8
            assert (batch["input_ids"] == omega).sum(-1).tolist() == [30] * 8
            pair = {**pair, "labels": 1 - pair["labels"]}
    tiny = resolve_config("05_gemma_encoder", "tiny", output_dir=str(tmp_path / "tiny"))
    assert ex.training_cut(Arm("bidirectional", "mean"), tiny) == tiny.min_len  # the BBC exercise still cuts
    assert ex.training_cut(Arm("bidirectional", "mean", task="regress"), tiny) is None


def test_gradient_checkpointing_flag_reaches_the_backbone(tmp_path):
    sets = {"train": Dataset.from_dict({"labels": [0, 1]}), "test": Dataset.from_dict({"labels": [1, 0]})}
    arm = Arm("bidirectional", "mean")
    on = ex.build_encoder(arm, tiny_gemma3(), sets, paper_config("sst2", tmp_path))
    assert checkpointed(on.backbone) and on.backbone.layers[0].gradient_checkpointing
    tiny = resolve_config("05_gemma_encoder", "tiny", output_dir=str(tmp_path / "tiny"))
    assert not checkpointed(ex.build_encoder(arm, tiny_gemma3(), sets, tiny).backbone)
    # a checkpointed bidirectional backbone gives the same gradients as a plain one
    ids = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 0, 0]])
    grads = []
    for flag in (False, True):
        model = ex.build_encoder(arm, tiny_gemma3(), sets, paper_config("sst2", tmp_path, gradient_checkpointing=flag))
        model.train()
        model(ids, (ids > 0).long(), labels=torch.tensor([0, 1])).loss.backward()
        grads.append(model.backbone.layers[0].self_attn.q_proj.weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def live_optimizers() -> set[int]:
    return {id(o) for o in gc.get_objects() if issubclass(type(o), torch.optim.Optimizer)}


def test_finished_arms_are_freed_and_kept_models_live_on_the_cpu(monkeypatch, tmp_path):
    """B4: with the cyclic GC off, every finished arm's model is gone when `run_grid` returns (accelerate's bf16
    forward wrapper is a reference cycle), except the kept one, which is on the CPU."""
    rng = random.Random(0)
    rows = [{"input_ids": [1] + [rng.randrange(2, 40) for _ in range(rng.randint(8, 12))], "labels": i % 2}
            for i in range(16)]
    sets = {"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:6])}
    cfg = resolve_config("05_gemma_encoder", "tiny", output_dir=str(tmp_path), device="cpu", precision="bf16",
                         seeds=(0,), max_steps=1, batch_size=4, warmup_steps=0)
    alive, fine_tune = {}, ex.fine_tune

    def tracked(arm, *args, **kwargs):
        run = fine_tune(arm, *args, **kwargs)
        alive[arm.name] = weakref.ref(run.model)
        assert "forward" in vars(run.model)  # the bf16 wrapper this test is about
        return run

    monkeypatch.setattr(ex, "fine_tune", tracked)
    arms = [Arm("causal", "mean"), Arm("bidirectional", "mean"), Arm("causal", "last_k1")]
    gc.collect()
    gc.disable()
    try:
        optimizers_before = live_optimizers()
        grid = ex.run_grid(arms, tiny_gemma3(), SimpleNamespace(pad_token_id=0), sets, cfg,
                           keep=("bidirectional|mean",))
        assert alive["causal|mean"]() is None and alive["causal|last_k1"]() is None
        # and no arm's AdamW state (twice the model's size) outlives its arm
        assert live_optimizers() <= optimizers_before
        kept = grid.models["bidirectional|mean"]
        assert alive["bidirectional|mean"]() is kept and kept.device.type == "cpu" and "forward" not in vars(kept)
    finally:
        gc.enable()
    assert set(grid.scores) == {"causal|mean", "bidirectional|mean", "causal|last_k1",
                                "causal|last_k1|train=right|eval=left"}


def test_metrics_accept_low_precision_tensors_and_cola_reports_mcc(tmp_path):
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.bfloat16)
    out = classification_metrics(logits, [0, 1, 1])
    assert out["acc"] == pytest.approx(2 / 3) and "mcc" in out
    scores = torch.tensor([[0.1], [0.5], [0.9]], dtype=torch.bfloat16)
    assert regression_metrics(scores, [0.0, 0.4, 1.0])["pearson"] > 0.9
    assert ex.main_metric(paper_config("cola", tmp_path)) == "mcc"
    assert ex.main_metric(paper_config("sst2", tmp_path)) == "acc"


def test_paper_parameters_reach_the_config(tmp_path):
    cfg = paper_config("msmarco", tmp_path, batch_size=2, grad_accum=16, max_len=128, min_len=4, padding_side="left",
                       num_probes=8, dataset_dir="/data/ms_marco")
    assert (cfg.batch_size, cfg.grad_accum, cfg.max_len, cfg.padding_side, cfg.num_probes, cfg.dataset_dir) == \
        (2, 16, 128, "left", 8, "/data/ms_marco")
    assert ex.training_cut(Arm("bidirectional", "mean"), cfg) is None  # min_len is the BBC exercise only


def test_padding_side_parameter_sets_the_side_of_every_default_arm(tmp_path):
    right = resolve_config("05_gemma_encoder", "tiny", output_dir=str(tmp_path), full_grid=True)
    left = resolve_config("05_gemma_encoder", "tiny", output_dir=str(tmp_path), full_grid=True, padding_side="left")
    right_arms, left_arms = default_arms(right), default_arms(left)
    own = [a.name for a in right_arms if "train=" not in a.name]
    assert own == [a.name for a in left_arms if "train=" not in a.name] and len(own) == len(right_arms) - 3
    assert len({a.name for a in left_arms}) == len(left_arms)
    mismatch = {a.name: (a.padding_side, a.eval_padding_side or a.padding_side)
                for a in left_arms if "train=" in a.name}
    assert mismatch == {"causal|last_naive|train=right|eval=right": ("right", "right"),
                        "causal|last_naive|train=right|eval=left": ("right", "left"),
                        "causal|last_k1|train=right|eval=left": ("right", "left")}
    assert all(a.padding_side == "left" for a in left_arms if "train=" not in a.name)
    assert all(a.padding_side == "right" for a in right_arms if "train=" not in a.name)
