"""The one training loop (on `accelerate`): every paper's method plugs in as a step function.

    args = TrainArgs(output_dir="runs/mine", max_steps=100, batch_size=8, lr=1e-4)   # or TrainArgs.from_config(cfg)
    result = train(model, dataset, args, collate_fn=collate, step_fn=sft_step, evaluate=eval_fn)

- A step function maps `(model, batch, step)` to `(loss, logs)`, where `step` is the number of optimizer steps
  taken so far (a schedule reads it); `sft_step` (teacher forcing) is the default.
- Mixed precision and devices come from `accelerate`; gradient accumulation, clipping, AdamW with linear warm-up
  then cosine decay (or a constant learning rate), optional parameter groups with their own learning rates.
- Every `eval_every` steps `evaluate(model)` adds its metrics to the history; every `ckpt_every` steps a
  checkpoint is written. Calling `train` again with the same arguments resumes from the last checkpoint (a
  finished run just reloads) and ends with the same numbers as a run that was never interrupted: the checkpoint
  holds the RNG states and the state of every stateful object (the step function and `stateful`, anything with
  `state_dict`/`load_state_dict`, such as a sampling generator or a rollout buffer).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import SAFE_WEIGHTS_NAME, GradientAccumulationPlugin, ProjectConfiguration, save
from accelerate.data_loader import prepare_data_loader, skip_first_batches
from accelerate.state import AcceleratorState
from datasets import Dataset
from safetensors.torch import load_model
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from .config import LR_SCHEDULES, TRACKERS, ConfigError, RunConfig, bounded, validate
from .runtime import keep_freed_memory, seeded_generator

StepFn = Callable[[torch.nn.Module, Any, int], tuple[torch.Tensor, dict[str, Any]]]
# wall seconds of every `train` call in this process, by run name: {"train_s", "eval_s", "steps"} (the steps it
# trained here; a reloaded run trains none); `seqnb.record.write_metrics` stores them as `train_runs_s`
TIMINGS: dict[str, dict[str, float]] = {}


@dataclass(frozen=True, kw_only=True)
class TrainArgs:
    """The training loop's own arguments.

    > What one run computes (all of it, with `settings`, is the checkpoint's fingerprint)
    max_steps, batch_size, grad_accum, lr, weight_decay, warmup_steps, lr_schedule ("cosine": decay to 0 at
    max_steps; "constant"), grad_clip (0: none), seed (data order),
    precision ("no", "bf16", "fp16"), device ("auto", "cpu", "cuda"); log_every, eval_every, ckpt_every (in
    optimizer steps; eval and checkpoint also at the last step). `settings`: whatever else decides the run's
    numbers (a method's hyperparameters, the data), so that a checkpoint made with other settings refuses to
    resume; `from_config` fills it with the notebook config's fields.

    > Where it writes and how it runs (not in the fingerprint)
    output_dir (checkpoints go to `<output_dir>/checkpoints/<name>`), resume, num_threads (torch CPU threads;
    0 keeps torch's default), log_with (an experiment tracker through accelerate that also gets every logged
    number: "tensorboard", writing to `<output_dir>/tensorboard/<name>`; "auto": TensorBoard when it is
    installed; "none").
    """

    max_steps: int = bounded(min=0)
    batch_size: int = bounded(min=1)
    lr: float = bounded(min=0.0)
    grad_accum: int = bounded(1, min=1)
    weight_decay: float = bounded(0.0, min=0.0)
    warmup_steps: int = bounded(0, min=0)
    lr_schedule: str = bounded("cosine", choices=LR_SCHEDULES)
    grad_clip: float = bounded(1.0, min=0.0)
    seed: int = bounded(0, min=0)
    precision: str = bounded("no", choices=("no", "bf16", "fp16"))
    device: str = bounded("auto", choices=("auto", "cpu", "cuda"))
    log_every: int = bounded(10, min=1)
    eval_every: int = bounded(10**9, min=1)
    ckpt_every: int = bounded(10**9, min=1)
    settings: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "."
    resume: bool = True
    num_threads: int = bounded(0, min=0)
    log_with: str = bounded("auto", choices=TRACKERS)

    _NOT_COMPUTED = ("output_dir", "resume", "num_threads", "log_with")

    def __post_init__(self):
        validate(self)

    @classmethod
    def from_config(cls, cfg: RunConfig, **overrides: Any) -> "TrainArgs":
        """The loop's arguments from a notebook config (its training fields, then `overrides`, e.g. a stage's own
        max_steps and lr). Every other config field goes into `settings`, except the notebook's `selection_fields`
        (which arms and seeds run, what is shown afterwards): adding a seed or an arm does not stop a finished
        arm from reloading."""
        own = {f.name for f in dataclasses.fields(cls)} - {"settings"}
        values = {k: v for k, v in cfg.to_dict().items() if k in own}
        settings = {k: v for k, v in cfg.to_dict().items()
                    if k not in own and k not in ("preset", *cfg.selection_fields)}
        return cls(**{**values, "settings": settings, **overrides})

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    def fingerprint(self) -> str:
        """The arguments that change what training computes (not where it writes or whether it resumes)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in self._NOT_COMPUTED}
        return json.dumps(d, sort_keys=True, default=str)


def sft_step(model: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Teacher forcing: mean cross-entropy of the gold next token over positions whose label is not -100."""
    loss = model(**batch).loss
    return loss, {"loss": loss.detach()}


@dataclass
class History:
    """Every logged value, as records `{"step": s, "split": "train" | "eval", name: value, ...}`."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def log(self, step: int, split: str, values: dict[str, Any]) -> None:
        self.records.append({"step": step, "split": split, **{k: _to_float(v) for k, v in values.items()}})

    def series(self, key: str, split: str | None = None) -> tuple[list[int], list[float]]:
        rows = [r for r in self.records if key in r and (split is None or r["split"] == split)]
        return [r["step"] for r in rows], [r[key] for r in rows]

    def last(self, key: str, split: str | None = None) -> float:
        steps, values = self.series(key, split)
        if not values:
            raise KeyError(f"no {key!r} logged" + (f" in split {split!r}" if split else ""))
        return values[-1]


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: History
    resumed_from: int  # the step training started from (0: fresh)


def _to_float(v: Any) -> Any:
    return v.item() if isinstance(v, torch.Tensor) else v


@dataclass(frozen=True)
class ParamGroup:
    """Parameters trained with their own learning rate (`lr=None`: the config's lr)."""

    params: list[torch.nn.Parameter]
    lr: float | None = None
    weight_decay: float | None = None


def default_param_groups(model: torch.nn.Module) -> list[ParamGroup]:
    """Weight decay on matrices only; biases, norms and other vectors are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [ParamGroup([p for p in params if p.ndim >= 2]), ParamGroup([p for p in params if p.ndim < 2], weight_decay=0.0)]


def train(
    model: torch.nn.Module,
    train_data: Dataset,
    args: TrainArgs,
    *,
    collate_fn: Callable[[list[dict]], dict],
    step_fn: StepFn = sft_step,
    evaluate: Callable[[torch.nn.Module], dict[str, Any]] | None = None,
    param_groups: list[ParamGroup] | None = None,
    name: str = "train",
    callbacks: Iterable[Callable[[int, torch.nn.Module], None]] = (),
    stateful: Iterable[Any] = (),
) -> TrainResult:
    """Train `model` for `args.max_steps` optimizer steps; checkpoints live in `args.output_dir/checkpoints/name`.

    `callbacks` run after each optimizer step as `fn(step, model)` (for hooks such as refreshing rollouts).
    The step function, when it has `state_dict`/`load_state_dict`, and every object in `stateful` are saved in
    each checkpoint and restored on resume. On the CPU, freed tensor memory stays in the process from the first
    call on (`seqnb.runtime.keep_freed_memory`: no page faults for each step's activations).
    """
    if not isinstance(args, TrainArgs):
        raise TypeError(f"train takes TrainArgs, got {type(args).__name__}: pass TrainArgs.from_config(cfg)")
    if len(train_data) < args.batch_size:
        raise ConfigError(
            "batch_size", f"the training set has {len(train_data)} examples, fewer than one batch of {args.batch_size}",
            "generate more training data or lower batch_size",
        )
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    started, eval_s = time.perf_counter(), 0.0
    cache_settings = _disable_kv_cache(model)
    if AcceleratorState._shared_state.get("_mixed_precision", args.precision) != args.precision:
        AcceleratorState._reset_state()  # one process may train at several precisions (arms, stand-ins, tests)
    tracker = tracker_name(args.log_with)
    accelerator = Accelerator(
        mixed_precision=args.precision, cpu=args.device == "cpu",
        # one optimizer step per grad_accum micro-batches, also across an epoch's end (the batches never run out)
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=args.grad_accum, sync_with_dataloader=False),
        step_scheduler_with_optimizer=False,  # the schedule counts optimizer steps, whatever the process count
        log_with=tracker, project_config=ProjectConfiguration(project_dir=str(args.run_dir),
                                                              logging_dir=str(args.run_dir / "tensorboard")),
    )
    if tracker:
        accelerator.init_trackers(name)
    if accelerator.device.type == "cpu":
        keep_freed_memory()  # each step's activations are not handed back to the OS and faulted in again
    groups = param_groups or default_param_groups(model)
    optimizer = torch.optim.AdamW(
        [
            {"params": g.params, "lr": args.lr if g.lr is None else g.lr,
             "weight_decay": args.weight_decay if g.weight_decay is None else g.weight_decay}
            for g in groups if g.params
        ],
        lr=args.lr,
        fused=accelerator.device.type in ("cpu", "cuda"),  # one kernel for all parameters, as Trainer's default
    )
    scheduler = get_scheduler("cosine" if args.lr_schedule == "cosine" else "constant_with_warmup", optimizer,
                              num_warmup_steps=args.warmup_steps, num_training_steps=max(args.max_steps, 1))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    for obj in ([step_fn] if hasattr(step_fn, "state_dict") else []) + list(stateful):
        accelerator.register_for_checkpointing(obj)

    ckpt_root = args.run_dir / "checkpoints" / name
    history, step = History(), 0
    if args.resume:
        step, history = _load_latest(accelerator, model, ckpt_root, args)
    elif ckpt_root.exists():
        shutil.rmtree(ckpt_root)
    resumed_from = step
    unwrapped = accelerator.unwrap_model(model)  # what callbacks and evaluation get (unwrapping costs 0.4 ms a call)

    batches = _batches(train_data, args, collate_fn, accelerator, start_micro=step * args.grad_accum)
    bar = tqdm(total=args.max_steps, initial=step, desc=name, disable=not accelerator.is_local_main_process)
    model.train()
    while step < args.max_steps:
        logs: dict[str, Any] = {}  # tensors stay on the device until logged: no sync per step
        for _ in range(args.grad_accum):
            batch = next(batches)
            with accelerator.accumulate(model):
                loss, micro_logs = step_fn(model, batch, step)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.grad_clip:
                    logs["grad_norm"] = accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            for k, v in micro_logs.items():
                logs[k] = logs.get(k, 0.0) + v / args.grad_accum
        scheduler.step()
        step += 1
        bar.update(1)
        if step % args.log_every == 0 or step == args.max_steps:
            if accelerator.num_processes > 1:  # each process saw its share of the batch: log their mean
                logs = {k: accelerator.reduce(torch.as_tensor(v, device=accelerator.device).float(), "mean")
                        for k, v in logs.items()}
            _log(history, accelerator, step, "train", {**logs, "lr": scheduler.get_last_lr()[0]})
            bar.set_postfix(loss=f"{_to_float(logs.get('loss', float('nan'))):.4f}")
        for callback in callbacks:
            callback(step, unwrapped)
        if evaluate is not None and (step % args.eval_every == 0 or step == args.max_steps):
            t_eval = time.perf_counter()
            _log(history, accelerator, step, "eval", run_eval(evaluate, unwrapped))
            eval_s += time.perf_counter() - t_eval
        if step % args.ckpt_every == 0 or step == args.max_steps:
            _save(accelerator, model, ckpt_root, step, history, args)
    bar.close()
    if tracker:
        accelerator.end_training()
    model = unwrapped
    model.eval()
    for config, use_cache in cache_settings:
        config.use_cache = use_cache
    wall = time.perf_counter() - started
    TIMINGS[name] = {"train_s": round(wall - eval_s, 2), "eval_s": round(eval_s, 2), "steps": step - resumed_from}
    return TrainResult(model=model, history=history, resumed_from=resumed_from)


def _disable_kv_cache(model: torch.nn.Module) -> list[tuple[Any, bool]]:
    """Turn off the KV cache of every Hugging Face model inside `model` (as Trainer does with `use_cache=False`): a
    training forward would otherwise build a cache that nothing reads, costing time and memory. Returns each config
    with its setting, to restore after training; decoding asks for the cache explicitly."""
    configs = {id(m.config): m.config for m in model.modules() if hasattr(getattr(m, "config", None), "use_cache")}
    settings = [(c, c.use_cache) for c in configs.values()]
    for config, _ in settings:
        config.use_cache = False
    return settings


def tracker_name(log_with: str) -> str | None:
    """The accelerate tracker `log_with` names ("auto": TensorBoard when it is installed), or None."""
    if log_with == "auto":
        return "tensorboard" if importlib.util.find_spec("tensorboard") else None
    return None if log_with == "none" else log_with


def _log(history: History, accelerator: Accelerator, step: int, split: str, values: dict[str, Any]) -> None:
    """Into the history, and every number also to the tracker as `<split>/<name>`."""
    history.log(step, split, values)
    numbers = {f"{split}/{k}": v for k, v in history.records[-1].items()
               if k not in ("step", "split") and isinstance(v, (int, float)) and not isinstance(v, bool)}
    accelerator.log(numbers, step=step)


def run_eval(evaluate: Callable[[torch.nn.Module], dict[str, Any]], model: torch.nn.Module) -> dict[str, Any]:
    """`evaluate(model)` in eval mode without gradients, then back to train mode."""
    model.eval()
    with torch.no_grad():
        metrics = evaluate(model)
    model.train()
    return metrics


def _batches(data: Dataset, args: TrainArgs, collate_fn, accelerator: Accelerator, start_micro: int):
    """Endless micro-batches: epoch e is `data` shuffled with seed (args.seed, e), so any position can be rebuilt
    on resume by skipping into the right epoch."""
    per_epoch = len(data) // args.batch_size
    epoch, skip = divmod(start_micro, per_epoch)
    while True:
        epoch_seed = args.seed * 100_003 + epoch
        # the order of `data.shuffle(seed=epoch_seed)`, read from `data` itself: one gather per batch, where the
        # shuffled copy's index mapping was read row by row
        order = np.random.default_rng(epoch_seed).permutation(len(data)).tolist()
        # its own generator: starting an iterator must not draw from the global RNG that dropout uses
        loader = DataLoader(data, batch_size=args.batch_size, sampler=order, collate_fn=collate_fn, drop_last=True,
                            generator=seeded_generator(epoch_seed, "cpu"))
        loader = prepare_data_loader(
            loader, accelerator.device, num_processes=accelerator.num_processes,
            process_index=accelerator.process_index, put_on_device=True,
        )
        if skip:
            loader = skip_first_batches(loader, skip)
        yield from loader
        epoch, skip = epoch + 1, 0


_STATE_FILE = "trainer_state.json"
# accelerate warns on every save that tied weights (embeddings = LM head) are stored once; that is expected
logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)


def _save(accelerator: Accelerator, model: torch.nn.Module, root: Path, step: int, history: History, args: TrainArgs,
          keep: int = 2) -> None:
    """A checkpoint at `step`, keeping the last `keep`; a finished run keeps only its last, and writes only the
    weights: never the optimizer, scheduler and RNG states that only a resumed run reads (two thirds of the bytes
    at fp32 with AdamW)."""
    path, finished = root / f"step_{step:08d}", step >= args.max_steps
    if finished:
        weights = accelerator.get_state_dict(model)  # every process takes part (FSDP gathers the shards)
        if accelerator.is_main_process:
            path.mkdir(parents=True, exist_ok=True)
            save(weights, path / SAFE_WEIGHTS_NAME, safe_serialization=True)  # tied weights stored once
    else:
        accelerator.save_state(str(path))
    if accelerator.is_main_process:
        state = {"step": step, "history": history.records, "fingerprint": args.fingerprint()}
        (path / _STATE_FILE).write_text(json.dumps(state))
        for old in sorted(root.glob("step_*"))[:-1 if finished else -keep]:
            shutil.rmtree(old)


def _load_latest(accelerator: Accelerator, model: torch.nn.Module, root: Path, args: TrainArgs) -> tuple[int, History]:
    done = sorted(p for p in root.glob("step_*") if (p / _STATE_FILE).is_file())
    if not done:
        return 0, History()
    state = json.loads((done[-1] / _STATE_FILE).read_text())
    if state["fingerprint"] != args.fingerprint():
        old, new = json.loads(state["fingerprint"]), json.loads(args.fingerprint())
        diff = {k: (old.get(k), new.get(k)) for k in new if old.get(k) != new.get(k)}
        raise ConfigError(
            "resume", f"the checkpoint in {root} was made with other settings {diff} (old, new)",
            "pass resume=False to start again (it deletes that checkpoint), or another output_dir",
        )
    if state["step"] >= args.max_steps:  # a finished run: its weights (the optimizer state is not kept)
        load_model(accelerator.unwrap_model(model), str(done[-1] / SAFE_WEIGHTS_NAME), device=str(accelerator.device))
    else:
        accelerator.load_state(str(done[-1]))
    return state["step"], History(state["history"])
