"""metrics.json: what a run measured, and the paper's claims checked against it.

Shape (extra keys allowed)::

    {"notebook", "preset", "seed", "device", "runtime_s", "results": {variant: {metric: number}},
     "claims": [{"id", "text", "metric", "better", "baseline", "method", "paper": {"baseline", "method"},
                 "margin", "asserted", "holds"}], ...}

Whether a claim holds is derived from `results` (`Claim.holds`), never typed in; an asserted claim that fails its margin fails the run.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from .config import RunConfig

METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Claim:
    """A paper's finding: `method` beats `baseline` on `metric` by at least `margin` in the `better` direction.

    `asserted=False` marks a claim the run computes and shows but cannot resolve at this size (below seed noise).
    """

    id: str
    text: str
    metric: str
    baseline: str
    method: str
    better: Literal["higher", "lower"] = "higher"
    paper: dict[str, float | None] = field(default_factory=lambda: {"baseline": None, "method": None})
    margin: float = 0.0
    asserted: bool = True

    def __post_init__(self):
        if self.better not in ("higher", "lower"):
            raise ValueError(f"claim {self.id!r}: better must be 'higher' or 'lower', got {self.better!r}")
        if set(self.paper) != {"baseline", "method"}:
            raise ValueError(f"claim {self.id!r}: paper must have exactly the keys 'baseline' and 'method'")

    def values(self, results: dict[str, dict[str, float]]) -> tuple[float, float]:
        try:
            return results[self.baseline][self.metric], results[self.method][self.metric]
        except KeyError as e:
            raise KeyError(f"claim {self.id!r} needs results[{e.args[0]!r}] ({self.metric!r})") from None

    def holds(self, results: dict[str, dict[str, float]]) -> bool:
        base, method = self.values(results)
        gain = method - base if self.better == "higher" else base - method
        return gain >= self.margin


def write_metrics(
    cfg: RunConfig,
    *,
    runtime_s: float,
    results: dict[str, dict[str, float]],
    claims: list[Claim] = (),
    device: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `<cfg.output_dir>/metrics.json` and return its path."""
    for variant, metrics in results.items():
        for name, value in metrics.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"results[{variant!r}][{name!r}] must be a finite number, got {value!r}")
    doc = {
        "notebook": cfg.notebook,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "device": device,
        "runtime_s": round(float(runtime_s), 2),
        "results": results,
        "claims": [{**asdict(c), "holds": c.holds(results)} for c in claims],
        "config": cfg.to_dict(),
        "environment": environment(),
        **(extra or {}),
    }
    path = cfg.run_dir / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def measured_once(path: Path, values: dict[str, float] | None) -> dict[str, float]:
    """What a reload cannot measure again (a training run's wall time, its token count): written to `path` when the
    run trained from step 0 (`values`), read back when it was reloaded (`values=None`); {} when never recorded
    (a run resumed midway)."""
    if values is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
        return values
    return json.loads(path.read_text()) if path.is_file() else {}


def load_metrics(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return json.loads((path / METRICS_FILE if path.is_dir() else path).read_text())


def claims_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per claim: paper's numbers beside ours, and whether it holds here."""
    rows = []
    for c in metrics["claims"]:
        claim = Claim(**{k: v for k, v in c.items() if k != "holds"})
        base, method = claim.values(metrics["results"])
        rows.append({
            "claim": claim.text, "metric": claim.metric, "baseline": claim.baseline, "method": claim.method,
            "paper baseline": claim.paper["baseline"], "paper method": claim.paper["method"],
            "ours baseline": base, "ours method": method, "margin": claim.margin,
            "holds here": claim.holds(metrics["results"]), "asserted": claim.asserted,
        })
    return pd.DataFrame(rows)


def results_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Variants as rows, metrics as columns."""
    return pd.DataFrame(metrics["results"]).T


def environment() -> dict:
    import torch
    import transformers

    from . import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "seqnb": __version__,
        "git_commit": _git_commit(),
        # the process's peak GPU memory so far (a notebook writes its metrics last): None without CUDA
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
