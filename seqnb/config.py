"""Run configuration: presets, overrides and validation.

A notebook's parameters cell holds plain values (preset, seed, output_dir, a few overrides). Its `NotebookSpec`
(each paper's `config.SPEC`, looked up by name with `seqnb.papers.resolve_config`) turns them into one frozen,
validated config object that is passed, never read from module state::

    cfg = resolve_config("00_quickstart", preset="tiny", seed=0, max_steps=None)

Every bad value raises `ConfigError`, whose message names the parameter and how to fix it.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

PRESET_NAMES = ("tiny", "paper")
LR_SCHEDULES = ("cosine", "constant")  # the learning rate after warm-up (seqnb.train.TrainArgs.lr_schedule)
TRACKERS = ("auto", "tensorboard", "none")  # where losses also go (seqnb.train.TrainArgs.log_with)


class ConfigError(ValueError):
    """A parameter has a bad value; the message names the parameter and the fix."""

    def __init__(self, param: str, problem: str, fix: str):
        self.param = param
        super().__init__(f"parameter {param!r}: {problem}. Fix: {fix}")


def bounded(default=dataclasses.MISSING, *, min=None, max=None, choices=None):
    """A dataclass field with bounds (inclusive) or a closed set of values, checked by `validate`; on a tuple
    field they hold for each element."""
    return field(default=default, metadata={"min": min, "max": max, "choices": choices})


def probability(default=dataclasses.MISSING):
    """A field holding a probability (or a tuple of them): in [0, 1]."""
    return bounded(default, min=0.0, max=1.0)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Fields every notebook shares: identity, hardware and the training loop's knobs (`seqnb.train.TrainArgs`
    takes them from here); a notebook's config adds its own. `selection_fields` name the fields that only choose
    which arms and seeds run or what is shown afterwards: they are left out of each training run's fingerprint."""

    selection_fields: ClassVar[tuple[str, ...]] = ()

    notebook: str
    preset: str = bounded(choices=PRESET_NAMES)
    seed: int = bounded(0, min=0)
    output_dir: str = ""
    resume: bool = True
    device: str = bounded("auto", choices=("auto", "cpu", "cuda"))
    precision: str = bounded("no", choices=("no", "bf16", "fp16"))
    num_threads: int = bounded(2, min=0)  # torch CPU threads; 0 keeps torch's default
    # losses and eval metrics also go to <run dir>/tensorboard ("auto": when TensorBoard is installed; or "none")
    log_with: str = bounded("auto", choices=TRACKERS)
    # the training loop
    max_steps: int = bounded(min=0)
    batch_size: int = bounded(min=1)
    grad_accum: int = bounded(1, min=1)
    lr: float = bounded(min=0.0)
    weight_decay: float = bounded(0.0, min=0.0)
    warmup_steps: int = bounded(0, min=0)
    lr_schedule: str = bounded("cosine", choices=LR_SCHEDULES)  # after warm-up: cosine decay to 0, or constant
    grad_clip: float = bounded(1.0, min=0.0)  # 0 disables clipping
    log_every: int = bounded(10, min=1)
    eval_every: int = bounded(min=1)
    ckpt_every: int = bounded(min=1)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Rules between fields (a subclass adds its own, raising ConfigError); `validate` calls it last."""


@dataclass(frozen=True)
class NotebookSpec:
    """A notebook's config class and its preset tables (values for every field without a default)."""

    name: str
    title: str
    config_cls: type[RunConfig]
    presets: dict[str, dict[str, Any]]

    def __post_init__(self):
        missing = set(PRESET_NAMES) - set(self.presets)
        if missing:
            raise ValueError(f"notebook {self.name!r} lacks presets {sorted(missing)}")

    def resolve(self, preset: str = "tiny", overrides: dict[str, Any] | None = None, **params: Any) -> RunConfig:
        """Preset values, then the caller's non-None overrides; validated and frozen.

        `None` means "keep the preset's value", so a parameters cell can list optional overrides as None.
        `overrides` sets any other field by name (a notebook's `config` parameter, e.g.
        `-p config "{'n_train': 64}"`).
        """
        if overrides is not None and not isinstance(overrides, dict):
            raise ConfigError("config", f"expected a dict of config fields, got {overrides!r}",
                              "pass e.g. -p config \"{'n_train': 64}\"")
        twice = sorted(k for k in overrides or {} if params.get(k) is not None)
        if twice:
            raise ConfigError(twice[0], "given both as a notebook parameter and in `config`", "give it once")
        params = {**params, **(overrides or {})}
        if not isinstance(preset, str) or preset not in self.presets:
            raise ConfigError("preset", f"unknown preset {preset!r}", f"use one of {list(self.presets)}")
        names = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ConfigError(
                unknown[0], f"not a parameter of {self.name}", f"use one of {sorted(names - {'notebook', 'preset'})}"
            )
        values = {**self.presets[preset], **{k: v for k, v in params.items() if v is not None}}
        hints = typing.get_type_hints(self.config_cls)
        for k, v in values.items():  # a list where the config holds a tuple (from papermill or JSON): keep it frozen
            if isinstance(v, list) and typing.get_origin(hints.get(k)) is tuple:
                values[k] = tuple(v)
        values.update(notebook=self.name, preset=preset)
        if not values.get("output_dir"):
            values["output_dir"] = str(default_output_dir(self.name, preset, values.get("seed", 0)))
        cfg = self.config_cls(**values)
        validate(cfg)
        return cfg


def validate(cfg) -> None:
    """Check each field of a config dataclass: its type and bounds (each element's, for a tuple), the rules between
    fields (`cfg.check`, where it has one), then the hardware it asks for."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        _check_type(f.name, value, hints[f.name])
        lo, hi, choices = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("choices")
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if v is None:
                continue
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                want = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                raise ConfigError(f.name, f"must be {want}, got {value!r}",
                                  f"pass a value {want}, e.g. -p {f.name} {lo if hi is None else hi}")
            if choices is not None and v not in choices:
                raise ConfigError(f.name, f"unknown value {v!r}", f"use one of {list(choices)}")
    if hasattr(cfg, "check"):
        cfg.check()
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "device",
                f"{_asker(cfg)} asks for a GPU (device='cuda') but torch sees none",
                "run on a GPU machine, use preset='tiny', or force device='cpu' (slow)",
            )
    if cfg.precision == "fp16" and cfg.device == "cpu":
        raise ConfigError("precision", "fp16 needs a GPU", "use precision='bf16' or 'no' on CPU")


def _asker(cfg) -> str:
    return f"preset {cfg.preset!r}" if hasattr(cfg, "preset") else "this run"


def _check_type(name: str, value: Any, hint: Any) -> None:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for t in allowed:
        if t is type(None) and value is None:
            return
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if t in (str, bool) and isinstance(value, t):
            return
        if typing.get_origin(t) is dict and isinstance(value, dict):
            return
        if typing.get_origin(t) in (tuple, list) and isinstance(value, (tuple, list)):
            item = typing.get_args(t)[0] if typing.get_args(t) else None
            for v in value if item not in (None, typing.Any) else ():
                _check_type(name, v, item)
            return
    want = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(name, f"expected {want}, got {type(value).__name__} {value!r}", f"pass a {want}")


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd) holding both `notebooks/` and `pyproject.toml`."""
    start = (start or Path.cwd()).resolve()
    for p in (start, *start.parents):
        if (p / "notebooks").is_dir() and (p / "pyproject.toml").is_file():
            return p
    return start


def default_output_dir(notebook: str, preset: str, seed: int) -> Path:
    """`<runs>/<notebook>/<preset>-seed<seed>`, where `<runs>` is $SEQNB_RUNS or `runs/` in the project."""
    runs = Path(os.environ.get("SEQNB_RUNS") or project_root() / "runs")
    return runs / notebook / f"{preset}-seed{seed}"
