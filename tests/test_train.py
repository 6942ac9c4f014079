import itertools
import json
import platform
import subprocess
import sys

import pytest
import torch

from seqnb.papers.quickstart import experiment as qs
from seqnb.collate import IGNORE_INDEX, PadCollator, tokenize_pairs
from seqnb.config import ConfigError
from seqnb.train import ParamGroup, TrainArgs, train


def setup_run(cfg):
    torch.manual_seed(cfg.seed)
    data = qs.build_data(cfg)
    model, tok = qs.build_model(cfg)
    return model, tok, qs.train_set(data, tok), PadCollator(tok.pad_token_id)


def test_tokenize_pairs_masks_the_prompt(char_tok):
    from datasets import Dataset

    rows = tokenize_pairs(Dataset.from_list([{"prompt": "1+2=", "target": "3"}]), char_tok)[0]
    assert char_tok.convert_ids_to_tokens(rows["input_ids"]) == ["<bos>", "1", "+", "2", "=", "3", "<eos>"]
    assert rows["labels"] == [IGNORE_INDEX] * 5 + rows["input_ids"][5:]
    batch = PadCollator(char_tok.pad_token_id)([rows, {"input_ids": [1, 5], "labels": [IGNORE_INDEX, 5]}])
    assert batch["input_ids"].shape == (2, 7) and batch["attention_mask"][1].tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert batch["labels"][1, 2:].eq(IGNORE_INDEX).all()


def test_loss_goes_down(tiny_cfg):
    cfg = tiny_cfg(max_steps=60)
    model, tok, data, collate = setup_run(cfg)
    history = train(model, data, TrainArgs.from_config(cfg), collate_fn=collate).history
    _, losses = history.series("loss", "train")
    assert losses[-1] < 0.6 * losses[0]


def test_training_builds_no_kv_cache_and_restores_the_setting(tiny_cfg):
    cfg = tiny_cfg(max_steps=3, eval_every=3)
    model, tok, data, collate = setup_run(cfg)
    assert model.config.use_cache
    caches = []

    def step(m, batch, _step):
        out = m(**batch)
        caches.append(out.past_key_values)
        return out.loss, {"loss": out.loss.detach()}

    train(model, data, TrainArgs.from_config(cfg), collate_fn=collate, step_fn=step)
    assert caches == [None] * 3 and model.config.use_cache


# a CPU training step's pattern of memory: activations allocated one after the other, then all freed together
_FREED_MEMORY_SCRIPT = """
import ctypes, resource, tempfile, torch
from datasets import Dataset
from seqnb.collate import PadCollator
from seqnb.models import build_decoder
from seqnb.tokenizers import char_tokenizer
from seqnb.train import TrainArgs, train

def faults_per_step(steps=10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        activations = [torch.ones(2**21) for _ in range(6)]  # 6 x 8 MiB
        del activations
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps

libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD at glibc's initial value, without its adaptation to freed blocks:
before = faults_per_step()    # every block is mapped and unmapped, whatever the heap held before
tok = char_tokenizer("0123")
rows = [[1, 4, 5, 2]] * 4
with tempfile.TemporaryDirectory() as tmp:
    train(build_decoder(tok, max_len=8, n_layer=1, d_model=8, n_head=1),
          Dataset.from_dict({"input_ids": rows, "labels": rows}),
          TrainArgs(output_dir=tmp, max_steps=1, batch_size=4, lr=1e-3, device="cpu", log_with="none"),
          collate_fn=PadCollator(tok.pad_token_id))
faults_per_step()
print(before, faults_per_step())
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
def test_after_cpu_training_freed_activations_stay_in_the_process():
    """Blocks that glibc maps on their own are handed back to the OS when freed and faulted in again on the next
    step; once `train` has run on the CPU, the process keeps them. In a fresh process: the setting is process-wide."""
    out = subprocess.run([sys.executable, "-c", _FREED_MEMORY_SCRIPT], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split()[-2:])
    assert before >= 12_288, f"48 MiB of mapped blocks should fault in 12,288 pages a step, got {before}"
    assert after < 20, f"{after} page faults a step after training on the CPU"


def test_evaluation_and_history(tiny_cfg):
    cfg = tiny_cfg(max_steps=20, eval_every=10)
    model, tok, data, collate = setup_run(cfg)
    calls = []
    result = train(model, data, TrainArgs.from_config(cfg), collate_fn=collate, evaluate=lambda m: calls.append(m.training) or {"x": 1.0})
    assert calls == [False, False] and result.history.series("x", "eval") == ([10, 20], [1.0, 1.0])
    assert result.history.series("lr")[0] == [5, 10, 15, 20]


def test_interrupted_run_resumes_to_identical_result(tiny_cfg, tmp_path):
    reference_cfg = tiny_cfg(output_dir=str(tmp_path / "straight"), max_steps=30, dropout=0.1)
    model, _, data, collate = setup_run(reference_cfg)
    straight = train(model, data, TrainArgs.from_config(reference_cfg), collate_fn=collate)

    cfg = tiny_cfg(output_dir=str(tmp_path / "interrupted"), max_steps=30, dropout=0.1)

    def interrupt(step, _model):
        if step == 17:
            raise KeyboardInterrupt

    model, _, data, collate = setup_run(cfg)
    with pytest.raises(KeyboardInterrupt):
        train(model, data, TrainArgs.from_config(cfg), collate_fn=collate, callbacks=[interrupt])
    model, _, data, collate = setup_run(cfg)  # a fresh process would rebuild everything
    resumed = train(model, data, TrainArgs.from_config(cfg), collate_fn=collate)
    assert resumed.resumed_from == 10
    assert resumed.history.records == straight.history.records
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_finished_run_reloads_without_training(tiny_cfg):
    cfg = tiny_cfg(max_steps=10)
    model, _, data, collate = setup_run(cfg)
    first = train(model, data, TrainArgs.from_config(cfg), collate_fn=collate)
    model, _, data, collate = setup_run(cfg)
    again = train(model, data, TrainArgs.from_config(cfg), collate_fn=collate, step_fn=lambda m, b, s: pytest.fail("trained again"))
    assert again.resumed_from == 10 and again.history.records == first.history.records
    trained, reloaded = first.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(trained[k], reloaded[k]) for k in trained)
    # a finished run keeps one checkpoint, without the optimizer and scheduler states only a resume reads
    (final,) = (cfg.run_dir / "checkpoints" / "train").glob("step_*")
    assert final.name == "step_00000010" and (final / "model.safetensors").is_file()
    assert not list(final.glob("optimizer*")) and not list(final.glob("scheduler*"))


def test_changed_config_refuses_to_resume_and_resume_false_restarts(tiny_cfg):
    model, _, data, collate = setup_run(tiny_cfg(max_steps=10))
    train(model, data, TrainArgs.from_config(tiny_cfg(max_steps=10)), collate_fn=collate)
    with pytest.raises(ConfigError) as err:
        train(model, data, TrainArgs.from_config(tiny_cfg(max_steps=10, lr=0.1)), collate_fn=collate)
    assert err.value.param == "resume" and "'lr'" in str(err.value)
    restarted = train(model, data, TrainArgs.from_config(tiny_cfg(max_steps=10, lr=0.1, resume=False)), collate_fn=collate)
    assert restarted.resumed_from == 0
    state = json.loads(next((tiny_cfg().run_dir / "checkpoints" / "train").glob("step_*/trainer_state.json")).read_text())
    assert json.loads(state["fingerprint"])["lr"] == 0.1


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_learning_rate_schedule_after_warm_up(tiny_cfg, schedule):
    """Linear warm-up over 4 steps, then cosine decay to 0 at max_steps (lr/2 half way), or held at lr."""
    cfg = tiny_cfg(max_steps=12, warmup_steps=4, lr=1e-2, log_every=1, lr_schedule=schedule)
    model, _, data, collate = setup_run(cfg)
    lrs = dict(zip(*train(model, data, TrainArgs.from_config(cfg), collate_fn=collate).history.series("lr")))
    assert lrs[2] == pytest.approx(5e-3) and lrs[4] == pytest.approx(1e-2)  # logged at step s: s / 4 of lr
    if schedule == "cosine":
        assert lrs[8] == pytest.approx(5e-3) and lrs[12] == pytest.approx(0.0)
    else:
        assert all(lrs[s] == pytest.approx(1e-2) for s in range(4, 13))


def test_param_groups_with_frozen_part_and_own_lr(tiny_cfg):
    cfg = tiny_cfg(max_steps=5, grad_accum=2)
    model, _, data, collate = setup_run(cfg)
    frozen = model.transformer.wpe.weight
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    head = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("transformer.h.")]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("transformer.h.")]
    train(model, data, TrainArgs.from_config(cfg), collate_fn=collate, param_groups=[ParamGroup(head, lr=1e-2), ParamGroup(rest)])
    assert torch.equal(frozen, before)


def test_too_little_data_is_a_clear_error(tiny_cfg):
    cfg = tiny_cfg(batch_size=16)
    model, _, data, collate = setup_run(cfg)
    with pytest.raises(ConfigError, match="batch_size"):
        train(model, data.select(range(3)), TrainArgs.from_config(cfg), collate_fn=collate)


@pytest.mark.parametrize("notebook", ["00_quickstart", "01_warmup_generations", "02_end_to_end_planner",
                                      "03_sequencematch", "04_self_generated_tokens", "05_gemma_encoder"])
def test_one_step_at_each_paper_presets_precision_and_lr_changes_the_weights(notebook, tiny_cfg, char_tok, tmp_path):
    """A checkpoint stored in bf16 (as Qwen2.5's is), loaded as the paper presets load models (fp32 master weights),
    then one step of the training loop at the preset's precision (bf16 autocast) and learning rate, without warm-up:
    every weight matrix changes. Pure bf16 weights would keep most entries, as the last lines show."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from seqnb.papers import resolve_config
    from seqnb.models import load_pretrained

    paper = resolve_config(notebook, "paper", device="cpu")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(char_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=char_tok.pad_token_id)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path / "ckpt")
    char_tok.save_pretrained(tmp_path / "ckpt")
    model, tok = load_pretrained(str(tmp_path / "ckpt"))
    cfg = tiny_cfg(precision=paper.precision, lr=paper.lr, weight_decay=paper.weight_decay, warmup_steps=0,
                   max_steps=1, batch_size=8, ckpt_every=1, eval_every=1)
    data = qs.train_set(qs.build_data(cfg), tok)
    # every matrix but the input embedding (rows of tokens absent from the batch get no gradient)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n}
    trained = train(model, data, TrainArgs.from_config(cfg), collate_fn=PadCollator(tok.pad_token_id)).model
    assert paper.precision == "bf16" and all(p.dtype == torch.float32 for p in trained.parameters())
    for name, p in trained.named_parameters():
        if name in before:
            assert (p.detach() != before[name]).float().mean() > 0.9, name
    if paper.lr <= 1e-5:  # the failure the fp32 master weights prevent: bf16 weights lose most of such a step
        w = before["model.layers.0.mlp.down_proj.weight"]
        step = paper.lr * torch.sign(torch.randn_like(w))  # Adam's first step is lr x sign(gradient)
        assert ((w.bfloat16() + step.bfloat16()) != w.bfloat16()).float().mean() < 0.5


class NoisyStep:
    """SFT plus a logged draw from its own generator: a stateful step function, as the paper methods' are."""

    def __init__(self):
        self.generator, self.steps = torch.Generator().manual_seed(7), []

    def __call__(self, model, batch, step):
        self.steps.append(step)
        loss = model(**batch).loss
        return loss, {"loss": loss.detach(), "draw": torch.rand((), generator=self.generator)}

    def state_dict(self):
        return {"rng": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["rng"])


def test_the_step_function_sees_the_step_and_its_state_survives_a_resume(tiny_cfg, tmp_path):
    cfg = tiny_cfg(output_dir=str(tmp_path / "straight"), max_steps=12, grad_accum=2, log_every=1, ckpt_every=5)
    model, _, data, collate = setup_run(cfg)
    step = NoisyStep()
    straight = train(model, data, TrainArgs.from_config(cfg), collate_fn=collate, step_fn=step)
    assert step.steps == [s for s in range(12) for _ in range(2)]  # every micro-batch of step s sees s

    cfg = tiny_cfg(output_dir=str(tmp_path / "interrupted"), max_steps=12, grad_accum=2, log_every=1, ckpt_every=5)

    def interrupt(s, _model):
        if s == 7:
            raise KeyboardInterrupt

    model, _, data, collate = setup_run(cfg)
    with pytest.raises(KeyboardInterrupt):
        train(model, data, TrainArgs.from_config(cfg), collate_fn=collate, step_fn=NoisyStep(), callbacks=[interrupt])
    model, _, data, collate = setup_run(cfg)
    step = NoisyStep()  # a fresh process: its generator starts again at seed 7, the checkpoint sets it back
    resumed = train(model, data, TrainArgs.from_config(cfg), collate_fn=collate, step_fn=step)
    assert resumed.resumed_from == 5 and step.steps[0] == 5
    assert resumed.history.series("draw") == straight.history.series("draw")
    assert resumed.history.records == straight.history.records


def test_train_wants_its_own_arguments(tiny_cfg):
    cfg = tiny_cfg(max_steps=2)
    model, _, data, collate = setup_run(cfg)
    with pytest.raises(TypeError, match="TrainArgs.from_config"):
        train(model, data, cfg, collate_fn=collate)
    with pytest.raises(ConfigError, match="grad_accum"):
        TrainArgs(max_steps=2, batch_size=4, lr=1e-3, grad_accum=0)


def test_tensorboard_tracker_gets_every_logged_loss_and_eval_metric(tiny_cfg, tmp_path):
    """With log_with="tensorboard" the run folder's event files parse back (TensorBoard's own reader) to the
    history's train losses and eval metrics, step by step; "none" writes no event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_cfg(output_dir=str(tmp_path / "tb"), max_steps=20, eval_every=10, log_with="tensorboard")
    model, _, data, collate = setup_run(cfg)
    n_evals = itertools.count()
    history = train(model, data, TrainArgs.from_config(cfg), collate_fn=collate, name="arm",
                    evaluate=lambda m: {"acc": 0.25 + 0.01 * next(n_evals)}).history
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard" / "arm")).Reload()
    for tag, (key, split) in {"train/loss": ("loss", "train"), "train/lr": ("lr", "train"),
                              "eval/acc": ("acc", "eval")}.items():
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        steps, values = history.series(key, split)
        assert [s for s, _ in got] == steps and [v for _, v in got] == pytest.approx(values, rel=1e-6), tag
    assert len(steps) == 2 and len(history.series("loss", "train")[0]) == 4

    cfg = tiny_cfg(output_dir=str(tmp_path / "off"), max_steps=5, log_with="none")
    model, _, data, collate = setup_run(cfg)
    train(model, data, TrainArgs.from_config(cfg), collate_fn=collate)
    assert not (tmp_path / "off" / "tensorboard").exists()


def test_one_optimizer_step_per_grad_accum_micro_batches_across_epoch_ends(tiny_cfg, monkeypatch):
    """Two batches an epoch and four micro-batches a step: accelerate would also step at each epoch's end (a
    partial accumulation, one optimizer step too many); the loop steps exactly max_steps times."""
    cfg = tiny_cfg(max_steps=3, batch_size=16, grad_accum=4, n_train=32, log_every=1)
    model, _, data, collate = setup_run(cfg)
    assert len(data) // cfg.batch_size == 2
    calls = []
    real_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: calls.append(1) or real_step(self, *a, **k))
    micro = []

    def step_fn(m, batch, step):
        micro.append(step)
        loss = m(**batch).loss
        return loss, {"loss": loss.detach()}

    train(model, data, TrainArgs.from_config(cfg), collate_fn=collate, step_fn=step_fn)
    assert micro == [0] * 4 + [1] * 4 + [2] * 4 and len(calls) == 3
