"""metrics.json: what a run measured, and the paper's claims checked against it.

Shape (extra keys allowed)::

    {"notebook", "preset", "seed", "device", "runtime_s", "results": {variant: {metric: number}},
     "claims": [{"id", "text", "metric", "better", "baseline", "method", "paper": {"baseline", "method"},
                 "margin", "asserted", "calibrated_on", "holds"}], ...}

Whether a claim holds is derived from `results` (`Claim.holds`), never typed in; an asserted claim that fails its margin
fails the run (`check_claims`).
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from .config import RunConfig

METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Claim:
    """A paper's finding: `method` beats `baseline` on `metric` by at least `margin` in the `better` direction.

    A claim is shown and never fails a run unless `asserted`; an asserted claim needs the seeds its margin was
    calibrated on (`calibrated_on`, seeds other than the default seed 0, so that the default run is an
    out-of-sample check; `seqnb calibrate` derives margins from such runs). A preset without calibration asserts
    nothing.
    """

    id: str
    text: str
    metric: str
    baseline: str
    method: str
    better: Literal["higher", "lower"] = "higher"
    paper: dict[str, float | None] = field(default_factory=lambda: {"baseline": None, "method": None})
    margin: float = 0.0
    asserted: bool = False
    calibrated_on: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "calibrated_on", tuple(self.calibrated_on))  # a list when read from JSON
        if self.asserted and not self.calibrated_on:
            raise ValueError(f"claim {self.id!r} is asserted but names no calibration seeds: pass calibrated_on "
                             "(the seeds its margin came from) or asserted=False")
        if self.better not in ("higher", "lower"):
            raise ValueError(f"claim {self.id!r}: better must be 'higher' or 'lower', got {self.better!r}")
        if set(self.paper) != {"baseline", "method"}:
            raise ValueError(f"claim {self.id!r}: paper must have exactly the keys 'baseline' and 'method'")

    def uncalibrated(self) -> "Claim":
        """This claim at a preset that has no calibration: shown, never asserted, no margin."""
        return replace(self, margin=0.0, asserted=False, calibrated_on=())

    def values(self, results: dict[str, dict[str, float]]) -> tuple[float, float]:
        try:
            return results[self.baseline][self.metric], results[self.method][self.metric]
        except KeyError as e:
            raise KeyError(f"claim {self.id!r} needs results[{e.args[0]!r}] ({self.metric!r})") from None

    def gain(self, results: dict[str, dict[str, float]]) -> float:
        """How much the method beats the baseline, in the `better` direction (negative: it loses)."""
        base, method = self.values(results)
        return method - base if self.better == "higher" else base - method

    def holds(self, results: dict[str, dict[str, float]]) -> bool:
        return self.gain(results) >= self.margin


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
    from .train import TIMINGS

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
        "train_runs_s": dict(TIMINGS),  # every training run of this process: its training and evaluation time
        **(extra or {}),
    }
    path = cfg.run_dir / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def section_times(notebook: dict[str, Any]) -> dict[str, float]:
    """Wall seconds per section of a notebook executed by papermill: its per-cell durations summed under each
    `## ` heading (cells before the first heading are "setup"), in the notebook's order."""
    times, section = {}, "setup"
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            heading = next((line[3:].strip() for line in "".join(cell["source"]).splitlines()
                            if line.startswith("## ")), None)
            section = heading or section
        elif cell["cell_type"] == "code":
            duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
            times[section] = round(times.get(section, 0.0) + (duration or 0.0), 2)
    return times


def record_section_times(run_dir: Path, notebook_path: Path) -> None:
    """Add the executed notebook's `section_times` to the run's metrics.json as `phases_s`."""
    metrics = load_metrics(run_dir)
    metrics["phases_s"] = section_times(json.loads(notebook_path.read_text()))
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")


TIMINGS_START, TIMINGS_END = "<!-- timings: written by `seqnb timings --readme` -->", "<!-- timings end -->"


def timings_table(runs: list[dict[str, Any]], top: int = 3) -> str:
    """A markdown table from runs' metrics.json: notebook, wall time, the sections that take the most, and the
    training runs inside (how many, their training and their periodic-evaluation seconds)."""
    lines = ["| notebook | run (s) | where the time goes (s) | training runs: train / eval (s) |", "|---|---|---|---|"]
    for m in sorted(runs, key=lambda m: m["notebook"]):
        phases = sorted(m.get("phases_s", {}).items(), key=lambda kv: -kv[1])[:top]
        where = "; ".join(f"{name} {sec:.0f}" for name, sec in phases) or "(no section times: run it with seqnb run)"
        trained = m.get("train_runs_s", {}).values()
        inside = (f"{len(trained)}: {sum(t['train_s'] for t in trained):.0f} / {sum(t['eval_s'] for t in trained):.0f}"
                  if trained else "-")
        lines.append(f"| {m['notebook']} ({m['preset']}, seed {m['seed']}) | {m['runtime_s']:.0f} | {where} | {inside} |")
    return "\n".join(lines)


def write_timings(readme: Path, table: str) -> None:
    """Replace the block between the timings markers of `readme` with `table`."""
    text = readme.read_text()
    if TIMINGS_START not in text or TIMINGS_END not in text:
        raise ValueError(f"{readme} has no timings block: add the lines {TIMINGS_START!r} and {TIMINGS_END!r}")
    head, rest = text.split(TIMINGS_START, 1)
    readme.write_text(f"{head}{TIMINGS_START}\n{table}\n{TIMINGS_END}{rest.split(TIMINGS_END, 1)[1]}")


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


class ClaimFailed(AssertionError):
    """An asserted claim did not hold: the run fails (after metrics.json and its figures are written)."""


def recorded_claims(metrics: dict[str, Any]) -> list[Claim]:
    """The claims of a metrics.json, as `Claim`s (whether each holds is derived again from `results`)."""
    return [Claim(**{k: v for k, v in c.items() if k != "holds"}) for c in metrics["claims"]]


def check_claims(metrics: dict[str, Any]) -> None:
    """Fail the run when an asserted claim does not hold: raise `ClaimFailed` naming every such claim with its
    numbers. Every notebook calls it at the end of its claims cell, so papermill, nbmake and `seqnb run` exit
    non-zero; claims with `asserted=False` are shown and never fail a run."""
    failed = []
    for claim in recorded_claims(metrics):
        if claim.asserted and not claim.holds(metrics["results"]):
            base, method = claim.values(metrics["results"])
            failed.append(f"{claim.id}: {claim.method} {claim.metric} = {method:.4g} vs {claim.baseline} "
                          f"{base:.4g}, needs {claim.better} by at least {claim.margin:g}")
    if failed:
        raise ClaimFailed(f"{len(failed)} asserted claim(s) of {metrics['notebook']} ({metrics['preset']}, seed "
                          f"{metrics['seed']}) do not hold; metrics.json and the figures are written:\n  "
                          + "\n  ".join(failed))


def run_seeds(metrics: dict[str, Any]) -> list[int]:
    """The seeds a run's results come from: its `seeds` (a notebook that averages several) or its one seed."""
    return list(metrics.get("seeds", [metrics["seed"]]))


def calibrate(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Margins for a notebook's claims from its metrics at two or more calibration seeds (never the default seed 0).
    Rule: a claim is asserted when the method beats the baseline in every run and its mean gain is at least twice
    the gains' standard deviation over the runs (on three seeds, a one-sided t-test at about p < 0.04); its margin
    is half the smallest gain, rounded down to one significant digit. Otherwise it is recorded unasserted. One
    row per claim: each run's gain, their mean, spread and smallest, the rule's verdict and margin, and the margin
    the claim has now."""
    seeds = sorted({s for m in runs for s in run_seeds(m)})
    if 0 in seeds:
        raise ValueError("calibration runs include seed 0, the default run's seed that checks the margins: "
                         "calibrate on other seeds (seqnb run NOTEBOOK --seed 1, 2, 3)")
    if len(runs) < 2:
        raise ValueError(f"calibration needs runs at two or more seeds to measure the spread, got {len(runs)}")
    rows = {}
    for m in runs:
        for recorded in m["claims"]:  # read as unasserted: a margin is what this computes, not what it checks
            claim = Claim(**{k: v for k, v in recorded.items() if k not in ("holds", "asserted", "calibrated_on")})
            row = rows.setdefault(claim.id, {"claim": claim.text, "metric": claim.metric, "margin now": claim.margin,
                                             "asserted now": recorded.get("asserted", False)})
            row["seed " + ",".join(map(str, run_seeds(m)))] = claim.gain(m["results"])
    table = pd.DataFrame(rows.values(), index=list(rows))
    gains = table.filter(like="seed ")
    table["mean gain"], table["gain std"], table["smallest gain"] = gains.mean(1), gains.std(1, ddof=1), gains.min(1)
    table["assert"] = (table["smallest gain"] > 0) & (table["mean gain"] >= 2 * table["gain std"])
    table["margin"] = [_round_down(g / 2) if ok else 0.0 for g, ok in zip(table["smallest gain"], table["assert"])]
    table.attrs["seeds"] = seeds
    return table


def _round_down(x: float) -> float:
    """Down to one significant digit (0.0825 -> 0.08, 13.9 -> 10)."""
    x = round(x, 9)  # 0.6 - 0.5 is 0.0999...: not a reason to round 0.05 down to 0.04
    digits = -math.floor(math.log10(x))
    return math.floor(x * 10**digits) / 10**digits


def claims_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per claim: paper's numbers beside ours, and whether it holds here."""
    rows = []
    for claim in recorded_claims(metrics):
        base, method = claim.values(metrics["results"])
        rows.append({
            "claim": claim.text, "metric": claim.metric, "baseline": claim.baseline, "method": claim.method,
            "paper baseline": claim.paper["baseline"], "paper method": claim.paper["method"],
            "ours baseline": base, "ours method": method, "margin": claim.margin,
            "holds here": claim.holds(metrics["results"]), "asserted": claim.asserted,
            "calibration seeds": ", ".join(map(str, claim.calibrated_on)) or "-",
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
