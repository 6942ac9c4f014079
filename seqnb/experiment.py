"""What every notebook's experiment shares: the record of one trained arm, the summary over seeds, and a cost that
survives a reload.

    run = ArmRun("bash", seed, result.model, result.history, results=metrics, cost=cost, resumed_from=...)
    results = seed_summary([{"tf": {...}, "bash": {...}} for each seed])     # -> metrics.json's `results`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .record import measured_once
from .train import History


@dataclass
class ArmRun:
    """One arm trained at one seed: its model and training history, what it measured (`results`, one row of metrics
    or several), and what its training cost as measured when it trained (`cost`, kept across reloads; {} for a run
    resumed midway)."""

    arm: str
    seed: int
    model: torch.nn.Module
    history: History
    results: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    resumed_from: int = 0

    def eval_records(self) -> list[dict]:
        """The history's evaluation records (one per `eval_every` steps), oldest first."""
        return [r for r in self.history.records if r["split"] == "eval"]


def seed_summary(per_seed: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, float]]:
    """`{row: {metric: value}}` per seed -> per row, the mean over seeds of every number every seed has, and, when
    there are several seeds, `<metric>_std`: the sample standard deviation (ddof=1) over seeds."""
    summary = {}
    for row, first in per_seed[0].items():
        out = {}
        for metric, value in first.items():
            if not _is_number(value) or not all(_is_number(s.get(row, {}).get(metric)) for s in per_seed):
                continue
            values = [s[row][metric] for s in per_seed]
            out[metric] = float(np.mean(values))
            if len(values) > 1:
                out[f"{metric}_std"] = float(np.std(values, ddof=1))
        summary[row] = out
    return summary


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def training_cost(run_dir: str | Path, name: str, resumed_from: int, measured: dict[str, float]) -> dict[str, float]:
    """A training run's cost (wall time, tokens): `measured` when it trained from step 0, written to
    `<run_dir>/costs/<name>.json`; what that file holds when it was reloaded; {} when it resumed midway."""
    return measured_once(Path(run_dir) / "costs" / f"{name}.json", measured if resumed_from == 0 else None)
