"""Benchmarks, measured side by side in one run: seqnb's training loop against Hugging Face `Trainer`, each paper
method's step against the SFT step, and generation with and without the KV cache.

    seqnb bench                 # writes benchmarks/results-<cpu|gpu>.json and benchmarks/README.md
    seqnb bench --quick         # seconds: checks that the benchmark code runs, not a speed
"""

from __future__ import annotations

import copy
import json
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from seqnb.collate import PadCollator, tokenize_pairs
from seqnb.papers import paper_module, resolve_config
from seqnb.models import build_decoder, count_parameters
from seqnb.record import environment
from seqnb.runtime import device_name, keep_freed_memory, seeded_generator
from seqnb.tokenizers import char_tokenizer
from seqnb.train import TrainArgs, train


# dense bf16 peak FLOP/s (no sparsity) from the vendors' data sheets, matched against the device name
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def peak_bf16_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


class _Clock:
    """Durations of the optimizer steps after step `start` (compile, allocator and data-loader start-up fall
    before the window). The median step is robust to a busy neighbour on a shared machine; the mean keeps
    periodic costs such as SequenceMatch's rollouts."""

    def __init__(self, start: int):
        self.start, self.last, self.durations = start, None, []

    def tick(self, step: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        if step > self.start:
            self.durations.append(now - self.last)
        self.last = now

    @property
    def median(self) -> float:
        return statistics.median(self.durations)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.durations)


def _model_and_data(size: str, n_rows: int, seq_len: int, seed: int):
    tok = char_tokenizer("0123456789+=")
    torch.manual_seed(seed)
    dims = dict(minimal=dict(n_layer=1, d_model=8, n_head=1), tiny=dict(n_layer=2, d_model=128, n_head=4),
                gpt2_small=dict(n_layer=12, d_model=768, n_head=12))
    model = build_decoder(tok, max_len=seq_len, **dims[size])
    g = seeded_generator(seed, "cpu")  # data made on the CPU
    ids = torch.randint(4, len(tok), (n_rows, seq_len), generator=g).tolist()
    return model, tok, Dataset.from_dict({"input_ids": ids, "labels": ids})


def training_throughput(*, size: str, steps: int, batch_size: int, seq_len: int, device: str, precision: str,
                        warmup: int, repeats: int = 2) -> dict:
    """Tokens per second of seqnb's loop and of `Trainer`: same initial weights, data, batch, length, precision,
    optimizer (fused AdamW, cosine schedule, clip 1.0) and number of steps. The two run alternately `repeats`
    times; each alternation gives one ratio seqnb / Trainer, and the reported ratio is their median (with the
    smallest and largest), so neither side is favoured by when the machine was busy. On the CPU both run with the
    allocator setting that seqnb's loop makes (`keep_freed_memory`), so that the ratio compares the loops and not
    how the heap was left by the run before."""
    if device == "cpu":
        keep_freed_memory()
    model, tok, data = _model_and_data(size, steps * batch_size, seq_len, seed=0)
    collate = PadCollator(tok.pad_token_id)
    out = {"model": size, "parameters": count_parameters(model), "batch_size": batch_size, "seq_len": seq_len,
           "steps": steps, "precision": precision, "repeats": repeats}

    def seqnb_run(tmp: str, clock: _Clock) -> None:
        args = TrainArgs(output_dir=tmp, device=device, precision=precision, max_steps=steps, batch_size=batch_size,
                         lr=1e-3, weight_decay=0.0, warmup_steps=0, resume=False, log_every=steps, eval_every=steps,
                         ckpt_every=steps, log_with="none")  # no tracker, as Trainer's report_to=[]
        train(copy.deepcopy(model), data, args, collate_fn=collate, callbacks=[lambda s, m: clock.tick(s)])

    def trainer_run(tmp: str, clock: _Clock) -> None:
        class Tick(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.tick(state.global_step)

        args = TrainingArguments(
            output_dir=tmp, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=1e-3,
            weight_decay=0.0, lr_scheduler_type="cosine", warmup_steps=0, max_grad_norm=1.0,
            logging_steps=steps, save_strategy="no", report_to=[], disable_tqdm=True, seed=0,
            dataloader_num_workers=0, use_cpu=device == "cpu", bf16=precision == "bf16",
        )
        Trainer(model=copy.deepcopy(model), args=args, train_dataset=data, data_collator=collate,
                callbacks=[Tick()]).train()

    speeds = {"seqnb": [], "trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for who, run_once in (("seqnb", seqnb_run), ("trainer", trainer_run)):
                _reset_peak_memory()
                clock = _Clock(warmup)
                run_once(tmp, clock)
                speeds[who].append(batch_size * seq_len / clock.median)
                out[f"{who}_peak_memory_gib"] = _peak_memory_gib()
    ratios = [a / b for a, b in zip(speeds["seqnb"], speeds["trainer"])]
    for who, values in speeds.items():
        out[f"{who}_tokens_per_s"] = statistics.median(values)
    out["ratio_seqnb_over_trainer"] = statistics.median(ratios)
    out["ratios"] = ratios
    peak = peak_bf16_flops(torch.cuda.get_device_name()) if device == "cuda" else None
    for who in ("seqnb", "trainer"):  # model FLOPs utilisation, 6·N FLOPs per trained token
        out[f"{who}_mfu"] = 6 * out["parameters"] * out[f"{who}_tokens_per_s"] / peak if peak else None
    return out


def _reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def method_overheads(*, steps: int, warmup: int, pretrain_steps: int, device: str) -> list[dict]:
    """Seconds per optimizer step of each implemented paper method against teacher forcing (SFT) on the same
    model, batch size and data, next to the method's arithmetic minimum."""
    return (_sequencematch_overheads(steps=steps, warmup=warmup, pretrain_steps=pretrain_steps, device=device)
            + _self_generated_overheads(epochs=3, device=device, quick=steps <= 10))


def _self_generated_overheads(*, epochs: int, device: str, quick: bool) -> list[dict]:
    """Notebook 04's arms on the tiny sorting task, timed after the teacher-forced first epoch (where the arms
    start to differ), with the offline generation rounds of BASH/RAC inside the window."""
    sg = paper_module("04_self_generated_tokens", "experiment")

    with tempfile.TemporaryDirectory() as tmp:
        base = resolve_config("04_self_generated_tokens", output_dir=tmp, device=device, num_threads=0,
                              **(dict(n_train=256, n_eval=64) if quick else {}))
        epoch = sg.steps_per_epoch(base, base.n_train)
        cfg = replace(base, max_steps=epochs * epoch, eval_every=epochs * epoch, ckpt_every=epochs * epoch,
                      log_every=epoch)
        init, _ = sg.build_model(cfg, cfg.seed)
        task = sg.build_task(cfg)
        per_step = {}
        for arm in ("tf", "ss", "bash", "rac"):
            clock = _Clock(epoch)
            sg.run_arm(arm, replace(cfg, output_dir=str(Path(tmp) / arm)), task, init,
                       callbacks=[lambda s, m: clock.tick(s)])
            per_step[arm] = clock.mean
    gen = f"offline greedy generation of the {cfg.n_train}-answer pool every {cfg.gen_every_epochs:g} epochs"
    return [
        {"method": f"{name} (04)", "s_per_step": per_step[arm], "ratio_to_sft": per_step[arm] / per_step["tf"],
         "arithmetic_minimum": minimum, "note": note}
        for arm, name, minimum, note in [
            ("ss", "scheduled sampling, two-pass", 4 / 3,
             "one extra forward pass without gradient (about a third of a forward+backward step)"),
            ("bash", "batch-scheduled sampling (BASH)", 1.0, f"one forward+backward pass; plus {gen} (not in the minimum)"),
            ("rac", "reference-answer correction (RAC)", 1.0, f"one forward+backward pass; plus {gen} (not in the minimum)"),
            ("tf", "teacher forcing", 1.0, "the baseline of this block"),
        ]
    ]


def _sequencematch_overheads(*, steps: int, warmup: int, pretrain_steps: int, device: str) -> list[dict]:
    """Notebook 03's arms from the same briefly pretrained weights (the tiny SequenceMatch setting); the arithmetic
    minimum counts padded tokens through forward+backward passes relative to the SFT batch (measured on the same
    batches), and SequenceMatch's generated rollout tokens as forward-only ones (a third each): compute scales
    with tokens at these lengths."""
    sm = paper_module("03_sequencematch", "experiment")
    collate_actions = paper_module("03_sequencematch", "backspace").collate_actions

    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve_config("03_sequencematch", output_dir=tmp, device=device, max_steps=steps,
                             pretrain_steps=pretrain_steps, ckpt_every=steps, log_every=steps, eval_every=steps,
                             num_threads=0)
        data = sm.build_data(cfg)
        model, vocab = sm.build_model(cfg, data)
        model = sm.pretrain(model, data, vocab, cfg).model
        per_step = {}
        for arm in ("mle", "bc_bksp", "sm"):
            clock = _Clock(warmup)
            arm_cfg = replace(cfg, output_dir=str(Path(tmp) / arm))
            sm.finetune(arm, model, data, vocab, arm_cfg, callbacks=[lambda s, m: clock.tick(s)])
            per_step[arm] = clock.mean
        clean = tokenize_pairs(data["train"], vocab.tokenizer)
        augmented = sm.augmented_set(data["train"], vocab, cfg.task, cfg.p_noise, cfg.seed)
        rollouts = sm.RolloutBuffer(data["train"]["prompt"], vocab, cfg)
        tokens = {
            "mle": _mean_tokens(lambda rows: PadCollator(vocab.pad)(rows)["input_ids"], clean, cfg.batch_size),
            "bc_bksp": _mean_tokens(lambda rows: collate_actions(rows, bksp_id=vocab.bksp, pad_id=vocab.pad).input_ids,
                                    augmented, cfg.batch_size),
            "rollouts": float(torch.tensor([rollouts.batch(model).input_ids.numel() for _ in range(8)],
                                           dtype=torch.float).mean()),
            # generating a refresh reads each rollout's tokens once, forward only (a third of a forward+backward
            # token), every roll_every steps
            "generation": sum(len(r["actions"]) for r in rollouts.rows) / 3 / cfg.roll_every,
        }
    bc_min = tokens["bc_bksp"] / tokens["mle"]
    sm_min = (tokens["bc_bksp"] + tokens["rollouts"] + tokens["generation"]) / tokens["mle"]
    return [
        {"method": "BC + backspace augmentation (03)", "s_per_step": per_step["bc_bksp"],
         "ratio_to_sft": per_step["bc_bksp"] / per_step["mle"], "arithmetic_minimum": bc_min,
         "note": "one forward+backward pass over sequences lengthened by the inserted mistakes and backspaces, "
                 "with a dense [B,T,T] mask (no causal fast path)"},
        {"method": "SequenceMatch (03)", "s_per_step": per_step["sm"], "ratio_to_sft": per_step["sm"] / per_step["mle"],
         "arithmetic_minimum": sm_min,
         "note": f"forward+backward on the data batch and on a rollout batch, and {cfg.n_rollouts} rollouts "
                 f"every {cfg.roll_every} steps through the KV cache (in the minimum as forward-only tokens); what is "
                 f"left is the dense [B,T,T] mask of both passes (no causal fast path), as in BC + backspace"},
        {"method": "SFT / teacher forcing (baseline)", "s_per_step": per_step["mle"], "ratio_to_sft": 1.0,
         "arithmetic_minimum": 1.0, "note": f"{tokens['mle']:.0f} padded tokens per batch"},
    ]


def _mean_tokens(collate, rows: Dataset, batch_size: int, n_batches: int = 8) -> float:
    """Mean padded size (B x T) of the first `n_batches` batches of `rows`."""
    sizes = [collate([rows[j] for j in range(i * batch_size, (i + 1) * batch_size)]).numel() for i in range(n_batches)]
    return sum(sizes) / len(sizes)


@torch.no_grad()
def generation_throughput(*, batch_size: int, prompt_len: int, new_tokens: int, device: str) -> dict:
    """New tokens per second of batched greedy decoding, with and without the KV cache."""
    model, tok, _ = _model_and_data("tiny", 1, prompt_len + new_tokens, seed=0)
    model.to(device).eval()
    g = seeded_generator(1, "cpu")
    ids = torch.randint(4, len(tok), (batch_size, prompt_len), generator=g).to(device)
    out = {"batch_size": batch_size, "prompt_len": prompt_len, "new_tokens": new_tokens}
    for cache in (True, False):
        model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False, use_cache=cache, pad_token_id=0)
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=cache,
                       pad_token_id=0)
        out[f"tokens_per_s_{'cache' if cache else 'no_cache'}"] = batch_size * new_tokens / (time.perf_counter() - start)
    out["cache_speedup"] = out["tokens_per_s_cache"] / out["tokens_per_s_no_cache"]
    return out


def run(quick: bool = False) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        training = training_throughput(size="gpt2_small", steps=8 if quick else 60, batch_size=8, seq_len=1024,
                                       device=device, precision="bf16", warmup=2 if quick else 10,
                                       repeats=1 if quick else 5)
    else:
        training = training_throughput(size="tiny", steps=6 if quick else 150, batch_size=64, seq_len=64,
                                       device=device, precision="no", warmup=2 if quick else 20,
                                       repeats=1 if quick else 5)
    # a model with almost no arithmetic: what is left of a step is each loop's own work and the op dispatch both share
    loop_cost = training_throughput(size="minimal", steps=6 if quick else 400, batch_size=2, seq_len=8, device=device,
                                    precision="no", warmup=2 if quick else 50, repeats=1 if quick else 5)
    return {
        "device": device_name(torch.device(device)), "date": date.today().isoformat(), "quick": quick,
        "machine": platform.machine(), "environment": environment(),
        "training": training, "loop_cost": loop_cost,
        "methods": method_overheads(steps=6 if quick else 120, warmup=2 if quick else 20,
                                    pretrain_steps=0 if quick else 400, device=device),
        "generation": generation_throughput(batch_size=64, prompt_len=16, new_tokens=8 if quick else 96,
                                            device=device),
    }


def table(results: dict) -> str:
    """The results as Markdown."""
    t, g = results["training"], results["generation"]
    step_ms = {who: 1000 * results["loop_cost"]["batch_size"] * results["loop_cost"]["seq_len"]
               / results["loop_cost"][f"{who}_tokens_per_s"] for who in ("seqnb", "trainer")}
    lines = [
        f"Device: {results['device']} · {results['date']} · torch {results['environment']['torch']} · "
        f"transformers {results['environment']['transformers']} · commit {results['environment']['git_commit']}",
        "",
        "| training step throughput | tokens/s |",
        "|---|---|",
        f"| seqnb loop ({t['model']}, {t['parameters']:,} params, batch {t['batch_size']} x {t['seq_len']}, "
        f"{t['precision']}) | {t['seqnb_tokens_per_s']:,.0f} |",
        f"| Hugging Face Trainer, same settings | {t['trainer_tokens_per_s']:,.0f} |",
        f"| ratio seqnb / Trainer (median of {t['repeats']} alternations; range) | "
        f"{t['ratio_seqnb_over_trainer']:.2f} ({min(t['ratios']):.2f}-{max(t['ratios']):.2f}) |",
        *([f"| MFU seqnb / Trainer (6·N·tokens/s over dense bf16 peak) | {t['seqnb_mfu']:.1%} / "
           f"{t['trainer_mfu']:.1%} |"] if t["seqnb_mfu"] else []),
        *([f"| peak memory seqnb / Trainer | {t['seqnb_peak_memory_gib']:.1f} / "
           f"{t['trainer_peak_memory_gib']:.1f} GiB |"] if t["seqnb_peak_memory_gib"] else []),
        f"| step of a model with almost no arithmetic (1 layer, 8 wide, batch 2 x 8): seqnb / Trainer | "
        f"{step_ms['seqnb']:.2f} / {step_ms['trainer']:.2f} ms |",
        "",
        "| method step vs SFT step | s/step | ratio | arithmetic minimum | what it does |",
        "|---|---|---|---|---|",
        *(f"| {m['method']} | {m['s_per_step']:.4f} | {m['ratio_to_sft']:.2f} | {m['arithmetic_minimum']:.2f} | "
          f"{m['note']} |" for m in results["methods"]),
        "",
        f"| generation (batch {g['batch_size']}, prompt {g['prompt_len']}, {g['new_tokens']} new tokens) | tokens/s |",
        "|---|---|",
        f"| greedy with KV cache | {g['tokens_per_s_cache']:,.0f} |",
        f"| greedy without cache | {g['tokens_per_s_no_cache']:,.0f} |",
        f"| cache speed-up | {g['cache_speedup']:.2f}x |",
    ]
    return "\n".join(lines)


README_HEAD = """# Benchmarks

Written by `seqnb bench` (CPU: under 5 minutes; on a GPU it runs the GPT-2-small-sized model), which measures
every ratio below in one run on one machine and rewrites this file from every `results-*.json` here.
`seqnb bench --quick` is the seconds-long smoke run that CI executes (it checks the code, not the speed).

* **Training**: seqnb's loop (`seqnb.train.train`) against Hugging Face `Trainer` with the same initial weights,
  data, batch, sequence length, precision, optimizer (fused AdamW, cosine schedule, clipping at 1.0) and steps;
  tokens/s from the median step after the warm-up steps; the two alternate five times, each alternation gives
  one ratio, and the table shows their median and range (tokens/s: each side's median run). On the CPU both loops
  run with freed memory kept in the process (`seqnb.runtime.keep_freed_memory`, which `train` sets on the CPU):
  with glibc's default trimming, each step's activations were page-faulted in again, by an amount that depended
  on what ran before and moved the ratio by several percent. The same comparison on a model with almost no
  arithmetic (1 layer, 8 wide) measures what each loop costs by itself per step.
* **Methods**: mean seconds per optimizer step (periodic work such as rollouts included) of each paper method that
  has landed against the SFT step on the same model and batch size. The arithmetic minimum is the number of
  padded tokens the method pushes through forward+backward passes per step (a token read forward only, as in
  generation through the KV cache, counts a third), relative to the SFT batch.
* **Generation**: batched greedy decoding with and without the KV cache.
"""


def write_readme(out_dir: Path) -> Path:
    """`out_dir/README.md` from every full (non-quick) result file in `out_dir`."""
    sections = [README_HEAD]
    for path in sorted(out_dir.glob("results-*.json")):
        results = json.loads(path.read_text())
        if not results["quick"]:
            sections.append(f"## {results['device']} (`{path.name}`)\n\n{table(results)}\n")
    if not any(p.name == "results-gpu.json" for p in out_dir.glob("results-*.json")):
        sections.append("## GPU\n\nNo GPU result yet: none was lent to the session that wrote this file. "
                        "Run `seqnb bench` on a GPU machine to add it; GPU numbers are never estimated.\n")
    readme = out_dir / "README.md"
    readme.write_text("\n".join(sections))
    return readme


def main(out_dir: Path, quick: bool) -> Path:
    results = run(quick=quick)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = "gpu" if torch.cuda.is_available() else "cpu"
    path = out_dir / f"results-{kind}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    if not quick:
        write_readme(out_dir)
    print(table(results))
    return path
