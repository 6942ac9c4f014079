"""No device mixing, checked without a GPU: every notebook's training steps (one per arm), evaluation and explorer
model calls run with the model and its batch on the `meta` device, where a CPU tensor mixed in raises exactly as
it does on CUDA ("... is not on the expected device meta!"), and so does `.numpy()` of a device tensor. Meta tensors
hold no numbers, so code that reads a value (`.item()`, `.tolist()`) stops there: a training step must finish
(loss and backward), an evaluation may stop at its first value read, having run its model call. Generators are
made by one helper on the model's device (tested here), and nothing else in seqnb makes one."""

import copy
import re
from pathlib import Path

import pytest
import torch

from seqnb.papers import resolve_config
from seqnb.runtime import check_generator, seeded_generator

META = torch.device("meta")
VALUE_READS = ("cannot be called on meta tensors", "Cannot copy out of meta tensor",
               "data-independent implementation does not exist")  # nonzero / boolean-mask indexing


def on_meta(fn) -> str:
    """Run fn(); 'finished', or 'value read' where it stopped at its first read of a value. Any other error
    (a CPU tensor mixed in, `.numpy()` of a device tensor, a CPU generator on device draws) propagates."""
    try:
        fn()
    except (RuntimeError, NotImplementedError) as e:
        if not any(s in str(e) for s in VALUE_READS):
            raise
        return "value read"
    return "finished"


@pytest.fixture(autouse=True)
def masks_without_value_reads(monkeypatch):
    """transformers skips building an all-ones SDPA mask after reading whether it is all ones (a value read that
    meta cannot answer): always build it here, as it is built for any padded batch."""
    import transformers.masking_utils as mu

    monkeypatch.setattr(mu, "_ignore_causal_mask_sdpa", lambda *a, **k: False)


def meta_batch(batch):
    if isinstance(batch, dict):
        return {k: v.to(META) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch.to(META)


def train_step_on_meta(step_fn, model, batch):
    """One training step (forward, loss, backward) with model and batch on meta; must finish."""
    model = copy.deepcopy(model).to(META).train()

    def run():
        loss, _ = step_fn(model, meta_batch(batch), 0)
        assert loss.device.type == "meta"
        loss.backward()

    assert on_meta(run) == "finished"


# ------------------------------------------------------------------------------------------ generators
def test_seeded_generator_lives_on_the_requested_device(monkeypatch):
    g = seeded_generator(3, "cpu")
    assert g.device.type == "cpu" and torch.rand(2, generator=g).tolist() == torch.rand(
        2, generator=torch.Generator().manual_seed(3)).tolist()
    assert seeded_generator(3, META) is None  # nothing is drawn on meta
    made = []

    class Recorder:
        def __init__(self, device=None):
            made.append(torch.device(device))

        def manual_seed(self, seed):
            return self

    monkeypatch.setattr(torch, "Generator", Recorder)
    seeded_generator(0, "cuda:1")
    assert made == [torch.device("cuda:1")]


def test_a_generator_on_another_device_is_refused():
    with pytest.raises(ValueError, match="parameter 'generator'.*seeded_generator"):
        check_generator(torch.Generator(), torch.device("cuda"))
    check_generator(torch.Generator(), torch.device("cpu"))
    check_generator(None, torch.device("cuda"))


def test_only_the_helper_makes_generators():
    """A `torch.Generator()` elsewhere is a CPU generator, which CUDA sampling rejects."""
    root = Path(__file__).resolve().parents[1] / "seqnb"
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "runtime.py" and re.search(r"torch\.Generator\(", p.read_text())]
    assert offenders == []


# ------------------------------------------------------------------------------------- 00 quickstart
def test_quickstart_step_on_meta(tiny_cfg):
    from seqnb.papers.quickstart import experiment as qs
    from seqnb.collate import PadCollator
    from seqnb.train import sft_step

    cfg = tiny_cfg()
    data = qs.build_data(cfg)
    model, tok = qs.build_model(cfg)
    rows = qs.train_set(data, tok)
    batch = PadCollator(tok.pad_token_id)([rows[i] for i in range(4)])
    train_step_on_meta(sft_step, model, batch)


# ---------------------------------------------------------------------------------------- 01 warmup
@pytest.fixture(scope="module")
def warmup(tmp_path_factory):
    from seqnb.papers.warmup_generations import experiment as ex

    cfg = resolve_config("01_warmup_generations", output_dir=str(tmp_path_factory.mktemp("w")), n_train=16,
                         n_test=4, n_curve=4, n_layer=1, d_model=16, n_head=2, pretrain_steps=0)
    model, setup = ex.build_model(cfg)
    return cfg, model, setup


@pytest.mark.parametrize("arm", ["sft", "pause", "oracle", "warmup"])
def test_warmup_arms_step_on_meta(warmup, arm):
    from seqnb.papers.warmup_generations import experiment as ex

    cfg, model, setup = warmup
    step = ex.make_step(arm, setup, cfg)
    rows = ex.running_sums(3, cfg.n_digits, 0)
    prompts, targets = setup.prompt_ids(rows["prompt"]), setup.target_ids(rows["target"])
    meta = copy.deepcopy(model).to(META).train()
    if arm == "warmup":  # sampling reads values (it decides when a warmup ends); the loss on given warmups
        warmups = [[1, 2, 3][: 1 + j % 3] for j in range(len(prompts) * step.k)]
        loss_fn = lambda: step.loss(meta, prompts, targets, warmups)[0].backward()  # noqa: E731
    else:
        loss_fn = lambda: step.loss(meta, prompts, targets)[0].backward()  # noqa: E731
    assert on_meta(loss_fn) == "finished"


def test_warmup_decoding_on_meta_reaches_its_first_value_read(warmup):
    from seqnb.papers.warmup_generations import method as wg

    cfg, model, setup = warmup
    meta = copy.deepcopy(model).to(META)
    prompts = setup.prompt_ids(["1234", "5678"])
    gen = seeded_generator(0, META)
    assert on_meta(lambda: wg.decode(meta, setup.fmt, prompts, max_warmup_len=3, max_answer_len=2,
                                     warmup_temperature=1.0, generator=gen)) == "value read"
    with pytest.raises(ValueError, match="parameter 'generator'"):
        wg.decode(model, setup.fmt, prompts, max_warmup_len=3, max_answer_len=2, warmup_temperature=1.0,
                  generator=_FakeCudaGenerator())


class _FakeCudaGenerator:
    device = torch.device("cuda")


# --------------------------------------------------------------------------------------- 02 planner
@pytest.fixture(scope="module")
def planner(tmp_path_factory):
    from seqnb.papers.end_to_end_planner import experiment as ex

    cfg = resolve_config("02_end_to_end_planner", output_dir=str(tmp_path_factory.mktemp("p")), n_train_docs=40,
                         n_test_docs=4, k=4, embed_dim=8, n_layer=1, d_model=16, n_head=2, eval_batch_size=4)
    data = ex.build_data(cfg)
    return cfg, data, ex.build_base(cfg, data, 0)


@pytest.mark.parametrize("arm", ["plain_continue", "uniform", "ora", "frozen_hard", "e2e_st", "frozen_soft",
                                 "e2e_soft", "e2e_soft_r0.5"])
def test_planner_arms_step_on_meta(planner, arm):
    from seqnb.papers.end_to_end_planner import experiment as ex
    from seqnb.papers.end_to_end_planner.method import PlannerLMStep

    cfg, data, base = planner
    interface, _, _, ratio = ex.arm_spec(arm)
    batch = ex.collate([data.rows["train"][i] for i in range(4)], data.tokenizer.pad_token_id)
    train_step_on_meta(PlannerLMStep(interface, ratio), copy.deepcopy(base), batch)


def test_planner_pretraining_evaluation_and_explorer_on_meta(planner):
    from seqnb.papers.end_to_end_planner import method as pl
    from seqnb.papers.end_to_end_planner import experiment as ex
    from seqnb.papers.end_to_end_planner import views as viz

    cfg, data, base = planner
    batch = ex.collate([data.rows["train"][i] for i in range(4)], data.tokenizer.pad_token_id)
    train_step_on_meta(pl.planner_step, base.planner, batch)
    meta = copy.deepcopy(base).to(META)
    test = ex.batches(cfg, data)  # built on the CPU, as the notebook builds them
    for interface in ("none", "soft", "oracle"):
        assert on_meta(lambda: pl.score(meta, test, interface)) == "value read"
    assert on_meta(lambda: pl.planner_metrics(meta.planner, test[0])) == "value read"
    row = data.rows["test"][0]
    assert on_meta(lambda: viz.planner_probs(meta, row)) == "value read"
    assert on_meta(lambda: viz.continue_sentence(meta, data.tokenizer, row, 1, torch.ones(cfg.k) / cfg.k)) == (
        "value read")


# ---------------------------------------------------------------------------------- 03 sequencematch
@pytest.fixture(scope="module")
def sequencematch(tmp_path_factory):
    from seqnb.papers.sequencematch import experiment as ex

    cfg = resolve_config("03_sequencematch", output_dir=str(tmp_path_factory.mktemp("s")), n_train=64, n_eval=4,
                         n_layer=1, d_model=16, n_head=2, max_actions=12)
    data = ex.build_data(cfg)
    model, vocab = ex.build_model(cfg, data)
    return cfg, data, model, vocab


@pytest.mark.parametrize("arm", ["mle", "bc_bksp", "sm"])
def test_sequencematch_arms_step_on_meta(sequencematch, arm):
    from seqnb.collate import PadCollator, tokenize_pairs
    from seqnb.papers.sequencematch import experiment as ex
    from seqnb.papers.sequencematch.backspace import collate_actions
    from seqnb.papers.sequencematch.method import SequenceMatchStep, bc_step
    from seqnb.train import sft_step

    cfg, data, model, vocab = sequencematch
    if arm == "mle":
        clean = tokenize_pairs(data["train"].select(range(4)), vocab.tokenizer).select_columns(["input_ids", "labels"])
        return train_step_on_meta(sft_step, model, PadCollator(vocab.pad)(list(clean)))
    aug = ex.augmented_set(data["train"].select(range(8)), vocab, cfg.task, cfg.p_noise, 0)
    batch = collate_actions([aug[i] for i in range(4)], bksp_id=vocab.bksp, pad_id=vocab.pad)
    if arm == "bc_bksp":
        return train_step_on_meta(bc_step, model, batch)
    rollouts = collate_actions([aug[i] for i in range(4, 8)], bksp_id=vocab.bksp, pad_id=vocab.pad)  # CPU
    step = SequenceMatchStep(rollouts=lambda: rollouts, eos_id=vocab.eos, allowed=vocab.allowed, beta=cfg.beta,
                             alpha=cfg.alpha, gamma=cfg.gamma, lam=cfg.lam)
    train_step_on_meta(step, model, batch)


def test_sequencematch_generation_on_meta_reaches_its_first_value_read(sequencematch):
    from seqnb.papers.sequencematch import experiment as ex

    cfg, data, model, vocab = sequencematch
    meta = copy.deepcopy(model).to(META)
    prompts = data["test"]["prompt"][:2]
    for seed in (None, 0):
        assert on_meta(lambda: ex.generate(meta, vocab, prompts, cfg, temperature=1.0, seed=seed)) == "value read"


# ------------------------------------------------------------------------------ 04 self-generated
@pytest.fixture(scope="module")
def selfgen(tmp_path_factory):
    from seqnb.papers.self_generated_tokens import experiment as ex

    cfg = resolve_config("04_self_generated_tokens", output_dir=str(tmp_path_factory.mktemp("g")), length=6,
                         n_train=64, n_eval=8, batch_size=8, max_steps=16, n_layer=1, d_model=16, n_head=2)
    task = ex.build_task(cfg)
    model, _ = ex.build_model(cfg, 0)
    return cfg, task, model


@pytest.mark.parametrize("arm,alignment", [("tf", "position"), ("ss", "position"), ("bash", "position"),
                                           ("bash_tf", "position"), ("noise", "position"), ("rac", "position"),
                                           ("rac", "edit")])
def test_self_generated_arms_step_on_meta(selfgen, arm, alignment):
    from dataclasses import replace

    from seqnb.papers.self_generated_tokens import method as sg
    from seqnb.papers.self_generated_tokens import experiment as ex

    cfg, task, model = selfgen
    step = ex.make_step(arm, replace(cfg, rac_alignment=alignment), task)
    n, T = len(task.train_rows), task.answer_len
    step.regenerate = lambda m: (torch.randint(0, 10, (n, T), device=META), torch.full((n,), T, device=META))
    batch = sg.collate(task.train_rows[:8], task.pad)
    meta = copy.deepcopy(model).to(META).train()

    def run():
        # late in training: eps > 0, so the arm mixes in its own tokens
        step(meta, meta_batch(batch), cfg.max_steps)[0].backward()

    # the edit alignment runs its Levenshtein DP in Python, over values
    assert on_meta(run) == ("value read" if alignment == "edit" else "finished")


def test_self_generated_evaluation_on_meta_reaches_its_first_value_read(selfgen):
    from seqnb.papers.self_generated_tokens.exposure import exposure, greedy_answers

    cfg, task, model = selfgen
    meta = copy.deepcopy(model).to(META)
    rows = task.eval_rows[:4]
    assert on_meta(lambda: greedy_answers(meta, [r["prompt"] for r in rows], task.answer_len, pad_id=task.pad,
                                          allowed=task.allowed)) == "value read"
    assert on_meta(lambda: exposure(meta, rows, pad_id=task.pad, allowed=task.allowed)) == "value read"


# ------------------------------------------------------------------------------------------ 05 encoder
@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from seqnb.papers.gemma_encoder import experiment as ex
    from seqnb.tokenizers import word_tokenizer

    cfg = resolve_config("05_gemma_encoder", output_dir=str(tmp_path_factory.mktemp("e")), hidden_size=16,
                         num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, intermediate_size=32)
    tok = word_tokenizer(["the team won the cup", "shares fell at the bank", "a new film"] * 3, vocab_size=60)
    return cfg, tok, ex.tiny_gemma(cfg, tok)


def _texts(tok, texts):
    return [tok(t)["input_ids"] for t in texts]


@pytest.mark.parametrize("attention,pooling,head", [
    ("causal", "first_k1", "classification"), ("bidirectional", "last_k1", "classification"),
    ("bidirectional", "mean", "regression"), ("bidirectional", "attn_query", "classification"),
    ("bidirectional", "attn_kv", "classification"), ("causal", "last_naive", "classification"),
    ("bidirectional", "mean", "ranking"), ("bidirectional", "learnable_tokens", "classification")])
def test_encoder_arms_step_on_meta(encoder, attention, pooling, head):
    from seqnb.papers.gemma_encoder.method import GemmaEncoderModel
    from seqnb.papers.gemma_encoder.data import EncoderCollator
    from seqnb.papers.gemma_encoder.experiment import Arm
    from seqnb.train import sft_step

    cfg, tok, decoder = encoder
    model = GemmaEncoderModel.from_decoder(decoder, head_type=head, num_labels=3, num_probes=2, group_size=2,
                                           **Arm(attention, pooling, dropout=0.1).encoder_kwargs())
    ids = _texts(tok, ["the team won", "shares fell at the bank", "a new film", "the cup"])
    if head == "ranking":  # groups of group_size candidates, the first relevant
        rows = [{"input_ids": ids[:2], "labels": [1, 0]}, {"input_ids": ids[2:], "labels": [1, 0]}]
    else:
        rows = [{"input_ids": x, "labels": float(i) if head == "regression" else i % 3} for i, x in enumerate(ids)]
    train_step_on_meta(sft_step, model, EncoderCollator(tok.pad_token_id, "left")(rows))


def test_encoder_bi_encoder_step_and_explorer_on_meta(encoder):
    from seqnb.papers.gemma_encoder.method import GemmaEncoderModel
    from seqnb.papers.gemma_encoder.data import EncoderCollator
    from seqnb.papers.gemma_encoder.experiment import contrastive_step
    from seqnb.papers.gemma_encoder.views import compare

    cfg, tok, decoder = encoder
    embedder = GemmaEncoderModel.from_decoder(decoder, head_type="embedding", attention="bidirectional",
                                              pooling="mean")
    q, p = _texts(tok, ["the cup", "a film"]), _texts(tok, ["the team won the cup", "a new film"])
    batch = EncoderCollator(tok.pad_token_id)([{"q_input_ids": a, "p_input_ids": b} for a, b in zip(q, p)])
    train_step_on_meta(contrastive_step(0.05), embedder, batch)
    classifier = GemmaEncoderModel.from_decoder(decoder, head_type="classification", num_labels=2,
                                                attention="bidirectional", pooling="mean").to(META)
    assert on_meta(lambda: compare("the cup", "a film", classifier, copy.deepcopy(embedder).to(META), tok,
                                   ["sport", "film"], 16)) == "value read"
