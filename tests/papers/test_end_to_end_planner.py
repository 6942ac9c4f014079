"""Notebook 02 (end-to-end planner + LM): sentence splitting and actions, the interface weights on hand-computed
cases, gradient routing, the oracle-mixing schedule, no leakage, target alignment, determinism, errors."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from seqnb.config import ConfigError
from seqnb.papers import resolve_config
from seqnb.papers.end_to_end_planner import method as pl
from seqnb.papers.end_to_end_planner import experiment as ex
from seqnb.papers.end_to_end_planner.corpus import plan_corpus


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cfg = resolve_config("02_end_to_end_planner", seed=0, output_dir=str(tmp_path_factory.mktemp("p")),
                         n_train_docs=60, n_test_docs=8, k=4, embed_dim=8, n_layer=1, d_model=16, n_head=2,
                         adapter_init="xavier", eval_batch_size=4)
    data = ex.build_data(cfg)
    return cfg, data


def test_split_sentences():
    assert pl.split_sentences("Rain fell. Then sun!  Why?") == ["Rain fell.", "Then sun!", "Why?"]
    assert pl.split_sentences("one sentence without end") == ["one sentence without end"]


def test_identical_sentences_get_identical_actions(small):
    _, data = small
    sents = data.train_sentences
    acts = data.kmeans.predict(data.embed([sents[0], sents[0], sents[1]]))
    assert acts[0] == acts[1] == data.train_actions[0]
    assert acts[2] == data.train_actions[1]


def test_encoding_aligns_actions_with_target_sentence(small):
    _, data = small
    row, doc = data.rows["train"][0], data.docs["train"][0]
    sidx = row["sentence_idx"]
    assert len(sidx) == len(row["input_ids"]) == len(row["pos_in_sent"])
    assert all(a <= b for a, b in zip(sidx, sidx[1:])) and sidx[0] == 0
    # the last token of sentence j-1 (the one before a token at position 0 of its sentence) uses sentence j
    starts = [t for t in range(1, len(sidx)) if row["pos_in_sent"][t] == 0]
    assert len(starts) == len(doc["sentences"])
    for j, t in enumerate(starts):
        assert sidx[t - 1] == j


def test_soft_mixture_hand_computed():
    C = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    z = torch.tensor([0.0, 0.0, math.log(2.0)])
    soft = pl.interface_weights(z, "soft")
    assert torch.allclose(soft, torch.tensor([0.25, 0.25, 0.5]))
    assert torch.allclose(soft @ C, torch.tensor([1.25, 1.25]))
    for mode in ("st", "hard"):
        assert torch.allclose(pl.interface_weights(z, mode) @ C, torch.tensor([2.0, 2.0]))
    assert torch.allclose(pl.interface_weights(z, "uniform"), torch.full((3,), 1 / 3))
    assert torch.equal(pl.interface_weights(z, "oracle", oracle=torch.tensor(1)), torch.tensor([0.0, 1.0, 0.0]))


def test_straight_through_backward_equals_soft_backward():
    C = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    upstream = torch.tensor([0.3, -1.0])
    grads, values = {}, {}
    for mode in ("soft", "st"):
        z = torch.tensor([0.1, -0.2, 0.4], requires_grad=True)
        e = pl.interface_weights(z, mode) @ C
        (e * upstream).sum().backward()
        grads[mode], values[mode] = z.grad, e.detach()
    assert torch.allclose(grads["soft"], grads["st"]) and grads["soft"].abs().sum() > 0
    assert not torch.allclose(values["soft"], values["st"])
    z = torch.tensor([0.1, -0.2, 0.4], requires_grad=True)
    assert not (pl.interface_weights(z, "hard") @ C).requires_grad


def _planner_grad(cfg, data, interface, planner_trainable=True, mix_ratio=0.0):
    model = ex.build_base(cfg, data, seed=0)
    pl.set_trainable(model, lm=False, planner=planner_trainable)
    model.train()
    batch = ex.collate([data.rows["train"][i] for i in range(4)], data.tokenizer.pad_token_id)
    pl.PlannerLMStep(interface, mix_ratio)(model, batch, 0)[0].backward()
    g = [p.grad for p in model.planner.parameters()]
    total = sum(float(x.abs().sum()) for x in g if x is not None)
    lm_grads = [p.grad for p in model.lm.parameters()]
    return total, lm_grads, model


def test_gradients_reach_the_planner_only_end_to_end(small):
    cfg, data = small
    for mode in ("soft", "st"):
        total, lm_grads, model = _planner_grad(cfg, data, mode)
        assert total > 0, mode
        assert all(g is None for g in lm_grads), "the base LM is frozen"
        assert all(a.weight.grad is not None for a in model.adapters) and all(c.grad is not None for c in model.codebooks)
    for mode in ("hard", "oracle", "uniform"):
        assert _planner_grad(cfg, data, mode)[0] == 0, mode
    assert _planner_grad(cfg, data, "soft", planner_trainable=False)[0] == 0, "frozen planner"
    assert _planner_grad(cfg, data, "soft", mix_ratio=1.0)[0] == 0, "every sentence oracle"


def test_oracle_mixing_and_schedule():
    w = torch.softmax(torch.randn(10_000, 4), -1)
    oracle = torch.randint(0, 4, (10_000,))
    mixed = pl.oracle_mix(w, oracle, 0.5, torch.Generator().manual_seed(0))
    replaced = (mixed != w).any(-1).float().mean().item()
    assert abs(replaced - 0.5) < 0.02
    assert torch.equal(mixed[(mixed != w).any(-1)].argmax(-1), oracle[(mixed != w).any(-1)])
    assert pl.oracle_mix(w, oracle, 0.0) is w
    assert pl.mix_ratio_at(0, 100, 0.5, "linear") == 0.5 and pl.mix_ratio_at(99, 100, 0.5, "linear") == 0.0
    assert pl.mix_ratio_at(40, 100, 0.3, "const") == 0.3
    with pytest.raises(ValueError, match="mix_ratio"):
        pl.oracle_mix(w, oracle, 1.5)
    with pytest.raises(ValueError, match="mix_schedule"):
        pl.mix_ratio_at(0, 10, 0.5, "cosine")


def test_planner_sees_only_earlier_sentences():
    torch.manual_seed(0)
    planner = pl.SentencePlanner(torch.randn(5, 6), ff_dim=16)
    e = torch.randn(1, 5, 6)
    altered = e.clone()
    altered[:, 3:] = torch.randn(1, 2, 6)
    for mode in (planner.train, planner.eval):  # eval may take torch's fused encoder path
        mode()
        a, b = planner(e), planner(altered)
        assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)  # row j sees sentences < j only
        assert not torch.allclose(a[:, 4], b[:, 4])


def test_planner_is_p1s_bidirectional_mean_pool_with_the_codebook_as_its_head():
    """Row j equals a hand-built P1 planner: encode [start, s_0..s_{j-1}] + positions alone, mean-pool, head."""
    torch.manual_seed(0)
    codebook = torch.randn(5, 6)
    planner = pl.SentencePlanner(codebook, ff_dim=16).eval()
    assert torch.equal(planner.head.weight, codebook)
    with torch.no_grad():
        planner.start.normal_()
    e = torch.randn(2, 4, 6)
    logits = planner(e)
    pe = pl.sinusoidal_positions(4, 6)
    f1, f2 = 10000 ** (-2 / 6), 10000 ** (-4 / 6)  # the frequencies of dimensions 2-3 and 4-5
    assert torch.allclose(pe[1], torch.tensor([math.sin(1), math.cos(1), math.sin(f1), math.cos(f1), math.sin(f2),
                                               math.cos(f2)]), atol=1e-6)
    for b in range(2):
        for j in range(4):
            ctx = torch.cat([planner.start[None], e[b, :j]]) + pe[: j + 1]
            h = planner.encoder(planner.inp(ctx)[None])[0]  # no mask: every position of the context sees all
            assert torch.allclose(logits[b, j], planner.head(h.mean(0)), atol=1e-5), (b, j)
    causal_first = planner(torch.cat([e[:, :1], torch.randn(2, 3, 6)], 1))[:, :2]
    assert torch.allclose(causal_first, logits[:, :2], atol=1e-5)


def test_uniform_lm_has_perplexity_vocab_size(small):
    cfg, data = small
    model = ex.build_base(cfg, data, seed=0)
    with torch.no_grad():
        model.lm.get_output_embeddings().weight.zero_()
    if model.lm.get_output_embeddings().bias is not None:
        model.lm.get_output_embeddings().bias.data.zero_()
    ppl = pl.score(model, ex.batches(cfg, data), "none")["ppl"]
    assert abs(ppl - model.lm.config.vocab_size) < 1e-3


class _NextTokenOracle(torch.nn.Module):
    """Puts probability q_b on the true next token of row b (the rest spread evenly); at padding, on token 0."""

    def __init__(self, q: list[float], vocab: int):
        super().__init__()
        self.q, self.vocab = torch.tensor(q), vocab
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # gives the stub a device

    def forward(self, input_ids, interface, **_):
        b, t = input_ids.shape
        nxt = torch.cat([input_ids[:, 1:], torch.zeros(b, 1, dtype=torch.long)], 1)
        probs = ((1 - self.q) / (self.vocab - 1))[:, None, None].expand(b, t, self.vocab).clone()
        probs.scatter_(2, nxt[..., None], self.q[:, None, None].expand(b, t, 1))
        return type("Out", (), {"logits": probs.log()})()


def test_perplexity_scores_each_real_next_token_once(small):
    """Hand-computed: rows of different lengths (right padding), q = 1/2 and 1/4 on the true next token, so the
    NLL is (n0 ln 2 + n1 ln 4) / (n0 + n1) over the n_b - 1 predicted tokens of each row. Shifting the labels by one
    more or fewer position, or counting padding, changes the number."""
    cfg, data = small
    test = [data.rows["test"][i] for i in range(len(data.rows["test"]))]
    rows = [max(test, key=lambda r: len(r["input_ids"])), min(test, key=lambda r: len(r["input_ids"]))]
    assert len(rows[0]["input_ids"]) > len(rows[1]["input_ids"])  # the short row is padded
    batch = ex.collate(rows, data.tokenizer.pad_token_id)
    n0, n1 = (len(r["input_ids"]) - 1 for r in rows)
    out = pl.score(_NextTokenOracle([0.5, 0.25], len(data.tokenizer)), [batch], "soft")
    assert out["nll"] == pytest.approx((n0 * math.log(2) + n1 * math.log(4)) / (n0 + n1), rel=1e-6)
    assert out["ppl"] == pytest.approx(math.exp(out["nll"]), rel=1e-9)


def test_oracle_mixing_happens_in_training_only(small):
    cfg, data = small
    model = ex.build_base(cfg, data, seed=0)
    batch = ex.collate([data.rows["train"][i] for i in range(4)], data.tokenizer.pad_token_id)
    real = batch["actions"] >= 0
    model.train()
    mixed = model.plan(batch["sent_emb"], batch["actions"], "soft", mix_ratio=1.0)
    assert torch.equal(mixed[real].argmax(-1), batch["actions"][real]) and torch.all(mixed[real].max(-1).values == 1)
    model.eval()
    assert torch.allclose(model.plan(batch["sent_emb"], batch["actions"], "soft", mix_ratio=1.0),
                          torch.softmax(model.planner(batch["sent_emb"]) / model.tau, -1))


def test_the_plan_enters_only_the_conditioned_layers_attention_outputs(small, tmp_path):
    """With cond_from_layer = 1 of 2 layers, the plan leaves layer 0 untouched and changes layer 1 from its
    attention output on (the adapter feeds GPT-2's attn.c_proj); a plan with zero adapters changes nothing."""
    cfg = resolve_config("02_end_to_end_planner", seed=0, output_dir=str(tmp_path), n_train_docs=60, n_test_docs=8,
                         k=4, embed_dim=8, n_layer=2, cond_from_layer=1, d_model=16, n_head=2, adapter_init="xavier")
    data = ex.build_data(cfg)
    model = ex.build_base(cfg, data, seed=0).eval()
    blocks = model.lm.transformer.h
    assert model.targets == [blocks[1].attn.c_proj] and len(model.adapters) == 1
    batch = ex.collate([data.rows["test"][0]], data.tokenizer.pad_token_id)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    seen = {}
    hooks = [blocks[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out[0].clone()))
             for i in range(2)]
    hooks.append(blocks[1].attn.register_forward_hook(lambda m, a, out: seen.__setitem__("attn1", out[0].clone())))
    with torch.no_grad():
        model(**inputs, interface="none")
        plain = dict(seen)
        model(**inputs, interface="soft")
        planned = dict(seen)
        for a in model.adapters:
            a.weight.zero_()
        model(**inputs, interface="soft")
        zeroed = dict(seen)
    for h in hooks:
        h.remove()
    assert torch.equal(plain[0], planned[0])
    assert not torch.allclose(plain["attn1"], planned["attn1"]) and not torch.allclose(plain[1], planned[1])
    assert all(torch.allclose(plain[k], zeroed[k], atol=1e-6) for k in plain)  # adapter bias starts at zero


def test_each_conditioned_layer_reads_its_own_codebook(tmp_path):
    """P1's code keeps a codebook in every conditioned layer: both start at the k-means centres, and changing layer
    1's leaves layer 0 untouched; the gradients of the two differ."""
    cfg = resolve_config("02_end_to_end_planner", seed=0, output_dir=str(tmp_path), n_train_docs=60, n_test_docs=8,
                         k=4, embed_dim=8, n_layer=2, d_model=16, n_head=2, adapter_init="xavier")
    data = ex.build_data(cfg)
    model = ex.build_base(cfg, data, seed=0)
    assert len(model.codebooks) == 2 and model.codebooks[0] is not model.codebooks[1]
    centres = torch.tensor(data.kmeans.cluster_centers_, dtype=torch.float32)
    assert all(torch.equal(c, centres) for c in model.codebooks)
    batch = ex.collate([data.rows["train"][i] for i in range(4)], data.tokenizer.pad_token_id)
    model(**batch, interface="soft").loss.backward()
    assert not torch.allclose(model.codebooks[0].grad, model.codebooks[1].grad)
    blocks = model.lm.transformer.h
    seen = {}
    hooks = [blocks[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out[0].clone()))
             for i in range(2)]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        model.eval()(**inputs, interface="soft")
        before = dict(seen)
        model.codebooks[1].add_(1.0)
        model(**inputs, interface="soft")
    for h in hooks:
        h.remove()
    assert torch.equal(before[0], seen[0]) and not torch.allclose(before[1], seen[1])


def test_pipeline_arms_start_from_the_arm_before_them(small, monkeypatch):
    """P1's PRED starts from the trained ORA model and P2's joint model from PRED; every other arm from stage 0."""
    cfg, data = small
    cfg = replace(cfg, arms=("pipeline_e2e", "pipeline_pred", "ora", "frozen_soft"), max_steps=2, batch_size=4,
                  planner_steps=2, planner_batch_size=4, lm_pretrain_steps=2, eval_every=2, ckpt_every=2)
    starts, run_arm = {}, ex.run_arm

    def recording_run_arm(arm, cfg, data, base, seed):
        starts[arm] = base
        return run_arm(arm, cfg, data, base, seed)

    monkeypatch.setattr(ex, "run_arm", recording_run_arm)
    run = ex.run_seed(cfg, 0)
    assert list(run.arms) == ["ora", "frozen_soft", "pipeline_pred", "pipeline_e2e"]
    assert starts["ora"] is run.base and starts["frozen_soft"] is run.base
    assert starts["pipeline_pred"] is run.arms["ora"].model
    assert starts["pipeline_e2e"] is run.arms["pipeline_pred"].model
    with pytest.raises(ConfigError, match="'pipeline_pred'"):
        resolve_config("02_end_to_end_planner", arms=("ora", "pipeline_e2e"))


def test_banded_attention_window(small):
    cfg, data = small
    model = ex.build_base(cfg, data, seed=0).eval()
    x = torch.tensor([data.rows["train"][0]["input_ids"][:12]])
    y = x.clone()
    y[0, 0] = (y[0, 0] + 1) % model.lm.config.vocab_size
    lx, ly = model(x).logits, model(y).logits
    assert not torch.allclose(lx[0, cfg.window - 1], ly[0, cfg.window - 1])  # token 0 is still in view
    assert torch.allclose(lx[0, cfg.window:], ly[0, cfg.window:], atol=1e-5)  # out of the window


def test_determinism_under_seed(small):
    cfg, data = small
    assert plan_corpus(5, 2, seed=3) == plan_corpus(5, 2, seed=3)
    assert plan_corpus(5, 2, seed=3) != plan_corpus(5, 2, seed=4)
    a, b = ex.build_base(cfg, data, seed=1), ex.build_base(cfg, data, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert np.array_equal(ex.build_data(cfg).train_actions, data.train_actions)


def test_clear_errors(small):
    cfg, data = small
    with pytest.raises(ValueError, match="interface"):
        pl.interface_weights(torch.zeros(3), "gumbel-ish")
    with pytest.raises(ValueError, match="tau"):
        pl.interface_weights(torch.zeros(3), "soft", tau=0.0)
    with pytest.raises(ValueError, match="'k'"):
        pl.fit_actions(np.zeros((3, 2)), 5, 0)
    with pytest.raises(ValueError, match="arms"):
        ex.arm_names(resolve_config("02_end_to_end_planner", arms=("e2e_soft", "gumbel")))
    with pytest.raises(ConfigError, match="'k'"):
        resolve_config("02_end_to_end_planner", k=1)
    with pytest.raises(ConfigError, match="adapter_init"):
        resolve_config("02_end_to_end_planner", adapter_init="ones")
    with pytest.raises(ValueError, match="n_sents"):
        plan_corpus(3, 1, seed=0, n_sents=2)


def test_paper_path_with_local_corpus_model_and_embedder(tmp_path, monkeypatch):
    """The paper preset's code path (articles with a text column, a pretrained GPT-2-style LM with adapters from
    layer 2 up, a transformers sentence embedder) on local folders, offline."""
    from datasets import Dataset, DatasetDict
    from transformers import BertConfig, BertModel

    from seqnb.models import build_decoder
    from seqnb.tokenizers import word_tokenizer

    docs = plan_corpus(40, 0, seed=0)["train"]
    articles = Dataset.from_dict({"text": [" ".join(d["sentences"]) for d in docs]})
    DatasetDict(train=articles).save_to_disk(tmp_path / "corpus")
    tok = word_tokenizer([" ".join(d["sentences"]) for d in docs], vocab_size=120)
    build_decoder(tok, n_layer=3, d_model=16, n_head=2, max_len=128).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    bert = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, pad_token_id=tok.pad_token_id)
    BertModel(bert).save_pretrained(tmp_path / "embedder")
    tok.save_pretrained(tmp_path / "embedder")
    cfg = resolve_config("02_end_to_end_planner", "paper", output_dir=str(tmp_path / "run"), device="cpu",
                         precision="no", corpus=str(tmp_path / "corpus"), corpus_config="",
                         model_name=str(tmp_path / "lm"), embedder=str(tmp_path / "embedder"), n_train_docs=30,
                         n_test_docs=6, max_tokens=40, k=4, planner_steps=2, planner_batch_size=4,
                         max_steps=2, batch_size=4, eval_every=2, ckpt_every=2, arms=("frozen_hard", "e2e_soft"),
                         mix_ratios=(), eval_batch_size=4)
    data = ex.build_data(cfg)
    monkeypatch.setattr(ex, "build_data", lambda *a, **k: pytest.fail("the seed's data was built twice"))
    runs = ex.run_experiment(cfg, data)  # as the notebook calls it, with the data it showed
    run = runs[cfg.seed]
    assert run.data is data
    assert run.base.layers == [2] and len(run.base.adapters) == 1  # the top L-2 layers of a 3-layer LM
    assert all(len(r["input_ids"]) <= cfg.max_tokens for r in run.data.rows["test"])
    assert run.data.docs["test"] and run.purity is None  # real text: no latent types
    results = ex.summarize(runs)
    assert results["e2e_soft"]["ppl"] > 1 and "ppl_oracle" in results["frozen_hard"]
    claims = {c.id: c for c in ex.claims(cfg, results)}
    assert not any(c.asserted or c.margin for c in claims.values())  # nothing calibrated at paper size
    assert "planner_beats_uniform_control" not in claims  # the uniform arm did not run


def test_tiny_claims_follow_the_calibration(small):
    cfg, _ = small
    names = [*ex.arm_names(cfg), "plain", "ora_pred", "oracle_eval"]
    results = {name: {"ppl": 20.0} for name in names}
    claims = {c.id: c for c in ex.claims(cfg, results)}
    assert set(claims) >= {"e2e_soft_beats_frozen_hard", "e2e_soft_beats_st", "oracle_mixing_r0.5"}
    assert all(c.calibrated_on == ex.CALIBRATION_SEEDS and 0 not in c.calibrated_on for c in claims.values()
               if c.asserted)
    assert claims["e2e_soft_beats_frozen_soft"].asserted  # small but consistent over the calibration seeds
    margin = claims["e2e_soft_beats_frozen_hard"].margin
    results["frozen_hard"]["ppl"] = 20.0 + margin + 1e-6
    assert claims["e2e_soft_beats_frozen_hard"].holds(results)
    results["frozen_hard"]["ppl"] = 20.0 + margin - 1e-6
    assert not claims["e2e_soft_beats_frozen_hard"].holds(results)
