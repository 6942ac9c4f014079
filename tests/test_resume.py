"""Resume through each notebook's own experiment function: one arm per notebook runs straight through, then again
in another output_dir interrupted (KeyboardInterrupt) after a checkpoint, then once more from scratch objects, as
a fresh process would; the resumed run must start from that checkpoint and end with the same history, weights and
deterministic metrics as the uninterrupted one. Each arm carries state beyond the weights: a sampling generator
(01, 02), a rollout buffer (03), an offline pool (04), dropout's global RNG (05)."""

import random
from contextlib import contextmanager

import pytest
import torch
from datasets import Dataset

from seqnb.papers import resolve_config

CKPT, STOP = 3, 5  # a checkpoint every CKPT steps; the interrupted run stops after STOP (after the checkpoint)
# evaluation at the last step only, every loss logged, one CPU thread
QUIET = dict(eval_every=10**6, log_every=1, warmup_steps=0, num_threads=1)


@pytest.fixture(autouse=True)
def one_thread():
    """Every run of a test starts on one CPU thread (`num_threads=1`: models this small train faster so); the
    thread count also decides the last bits of notebook 02's k-means codebook, so it must not change between runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def interrupt_after(stop: int):
    def callback(step, _model):
        if step == stop:
            raise KeyboardInterrupt

    return callback


@contextmanager
def interrupted(monkeypatch, module, stop: int = STOP):
    """For experiment functions that take no callbacks: the loop they call (`module.train`) gets one that
    interrupts after `stop` optimizer steps; the call must raise KeyboardInterrupt."""
    real = module.train

    def train(*args, callbacks=(), **kwargs):
        return real(*args, callbacks=[*callbacks, interrupt_after(stop)], **kwargs)

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(module, "train", train)
        yield


def without(record: dict, keys: tuple[str, ...]) -> dict:
    """`record` less `keys`, tensors as lists (compared exactly)."""
    return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in record.items() if k not in keys}


def assert_resumed_identically(straight, resumed, ckpt: int = CKPT, wall: tuple[str, ...] = ()) -> None:
    """`resumed` started from the checkpoint at `ckpt` and ends as `straight`: every history record (but the wall
    times `wall`) and every weight."""
    assert straight.resumed_from == 0 and resumed.resumed_from == ckpt
    assert [without(r, wall) for r in resumed.history.records] == [without(r, wall) for r in straight.history.records]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_warmup_arm_resumes_its_warmup_sampling(tmp_path, monkeypatch):
    """01: the `warmup` arm samples K warmups per input from its own generator, which the checkpoint carries; its
    probe (warmups of fixed inputs at steps 0 and 4, from a generator of its own) keeps its records on disk."""
    from seqnb.papers.warmup_generations import experiment as ex

    def run(name):
        cfg = resolve_config("01_warmup_generations", output_dir=str(tmp_path / name), n_digits=4, n_train=16,
                             n_test=4, n_curve=4, n_layer=1, d_model=16, n_head=2, pretrain_steps=0,
                             max_warmup_len=4, n_warmups=2, n_sweep=(), controls=False, probe_steps=(0, 4),
                             max_steps=6, batch_size=4, ckpt_every=CKPT, **QUIET)
        prepared = ex.prepare(cfg)
        return ex.train_arm("warmup", prepared.base, prepared.data, prepared.setup, cfg, k=cfg.n_warmups)

    straight = run("straight")
    with interrupted(monkeypatch, ex):
        run("interrupted")
    resumed = run("interrupted")
    assert_resumed_identically(straight, resumed)
    assert sorted(straight.probe.records) == [0, 4] and resumed.probe.records == straight.probe.records


def test_planner_arm_with_oracle_mixing_resumes_its_mixing_generator(tmp_path, monkeypatch):
    """02: `e2e_soft_r0.5` with the linear schedule mixes oracle actions in at a step-dependent ratio, drawn from
    its own generator."""
    from seqnb.papers.end_to_end_planner import experiment as ex

    def run(name):
        cfg = resolve_config("02_end_to_end_planner", output_dir=str(tmp_path / name), n_train_docs=40,
                             n_test_docs=4, k=4, embed_dim=8, n_layer=1, d_model=16, n_head=2, eval_batch_size=4, lm_pretrain_steps=0, planner_steps=0, arms=("e2e_soft_mix",),
                             mix_ratios=(0.5,), mix_schedule="linear", max_steps=6, batch_size=4,
                             ckpt_every=CKPT, **QUIET)
        data = ex.build_data(cfg)
        base, _ = ex.pretrain(cfg, data, cfg.seed)
        (arm,) = ex.arm_names(cfg)
        return ex.run_arm(arm, cfg, data, base, cfg.seed)

    straight = run("straight")
    with interrupted(monkeypatch, ex):
        run("interrupted")
    resumed = run("interrupted")
    assert_resumed_identically(straight, resumed)
    # perplexities (predicted and oracle actions), planner accuracy, ...; the wall time is measured only by a run
    # that trained from step 0
    assert straight.arm == "e2e_soft_r0.5" and "wall_s" in straight.cost and resumed.cost == {}
    assert resumed.results == {row: without(m, ("wall_s",)) for row, m in straight.results.items()}


def test_sequencematch_arm_resumes_its_rollout_buffer(tmp_path):
    """03: the `sm` arm trains on rollouts sampled from a buffer (its python RNG and its rollouts, refreshed every
    `roll_every` steps: also between the checkpoint and the interruption)."""
    from seqnb.papers.sequencematch import experiment as ex

    def run(name, callbacks=()):
        cfg = resolve_config("03_sequencematch", output_dir=str(tmp_path / name), n_train=64, n_eval=4, n_layer=1,
                             d_model=16, n_head=2, max_actions=12, n_rollouts=16, roll_every=2, pretrain_steps=0,
                             max_steps=6, batch_size=8, ckpt_every=CKPT, **QUIET)
        data = ex.build_data(cfg)
        torch.manual_seed(0)  # the rollouts sample from the global RNG: the same start for every run
        model, vocab = ex.build_model(cfg, data)
        return ex.finetune("sm", model, data, vocab, cfg, callbacks=callbacks)

    straight = run("straight")
    with pytest.raises(KeyboardInterrupt):
        run("interrupted", [interrupt_after(STOP)])
    assert_resumed_identically(straight, run("interrupted"))


def test_self_generated_arm_resumes_its_offline_pool(tmp_path):
    """04: `bash` mixes in tokens of an offline pool generated at its first mixed step (2, before the checkpoint at
    4) and again at 6: steps 4 and 5 of the resumed run read the pool from the checkpoint (a pool regenerated on
    resume would hold other answers, as lr is high enough to change them, and move the rounds to 4 and 8)."""
    from seqnb.papers.self_generated_tokens import experiment as ex

    def run(name, callbacks=()):
        cfg = resolve_config("04_self_generated_tokens", output_dir=str(tmp_path / name), length=6, n_train=32,
                             n_eval=8, n_layer=1, d_model=16, n_head=2, eps_start_epochs=0.25, gen_every_epochs=1.0,
                             eval_batch_size=64, lr=1e-2, max_steps=10, batch_size=8, ckpt_every=4, **QUIET)
        model, _ = ex.build_model(cfg, cfg.seed)
        return ex.run_arm("bash", cfg, ex.build_task(cfg), model, callbacks=callbacks)

    straight = run("straight")
    with pytest.raises(KeyboardInterrupt):
        run("interrupted", [interrupt_after(STOP)])
    resumed = run("interrupted")
    wall = ("wall_s", "gen_s")
    assert_resumed_identically(straight, resumed, ckpt=4, wall=wall)
    # exposure metrics, generations and the cost counters (rounds, tokens generated and mixed in)
    assert straight.eval_records()[-1]["gen_rounds"] == 2 and straight.results["mixed_tokens"] > 0
    assert without(resumed.results, wall) == without(straight.results, wall)


ENCODER = dict(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, intermediate_size=32, max_len=16,
               min_len=4)


@pytest.fixture(scope="module")
def encoder_setup():
    """A tiny Gemma 3 decoder and classification sets of random token rows (longer than min_len: batches are cut)."""
    from seqnb.papers.gemma_encoder import experiment as ex
    from seqnb.tokenizers import word_tokenizer

    tok = word_tokenizer(["the team won the cup", "shares fell at the bank", "a new film"], vocab_size=60)
    cfg = resolve_config("05_gemma_encoder", output_dir="/unused", **ENCODER)
    torch.manual_seed(0)
    decoder = ex.tiny_gemma(cfg, tok)
    rng = random.Random(0)

    def rows(n):
        return Dataset.from_list([{"input_ids": [tok.bos_token_id] + [rng.randrange(4, len(tok)) for _ in range(12)],
                                   "labels": i % 3} for i in range(n)])

    return tok, decoder, {"train": rows(16), "test": rows(6)}


def test_encoder_arm_with_dropout_resumes_the_global_rng(tmp_path, monkeypatch, encoder_setup):
    """05: the notebook's dropout arm (bidirectional, mean pooling, p > 0) draws its dropout masks from the global
    RNG, which the checkpoint carries."""
    from seqnb.papers.gemma_encoder import experiment as ex

    tok, decoder, sets = encoder_setup

    def run(name):
        cfg = resolve_config("05_gemma_encoder", output_dir=str(tmp_path / name), seeds=(0,), max_steps=6,
                             batch_size=4, ckpt_every=CKPT, **ENCODER, **QUIET)
        (arm,) = [a for a in ex.default_arms(cfg) if a.dropout > 0]
        return ex.fine_tune(arm, decoder, tok, sets, cfg, seed=0)

    straight = run("straight")
    with interrupted(monkeypatch, ex):
        run("interrupted")
    assert_resumed_identically(straight, run("interrupted"))
