"""`seqnb list`, `seqnb run <notebook|all> [--preset tiny|paper] [--seed N] [-p NAME VALUE ...]` and
`seqnb calibrate RUN_DIR ...` (claim margins from runs at calibration seeds) and `seqnb timings RUN_DIR ...
[--readme README.md]` (wall time per notebook section, recorded by `run` in metrics.json as `phases_s`).

`run` executes notebooks with papermill into `runs/<notebook>/<preset>-seed<seed>/` (the executed notebook,
metrics.json and figures) and prints each run's results and claims. A run fails (exit 1) when a cell raises,
an asserted claim that does not hold included (`seqnb.record.check_claims`).
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

from .config import PRESET_NAMES, ConfigError, default_output_dir, project_root
from .papers import notebook_specs, resolve_config


def notebooks_dir() -> Path:
    for root in (project_root(), Path(__file__).resolve().parents[1]):
        if (root / "notebooks").is_dir():
            return root / "notebooks"
    raise FileNotFoundError("no notebooks/ folder: run seqnb from a checkout of the seqnb repository")


def notebook_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))}


def parse_value(text: str):
    """A `-p` value as Python would read it (1, 0.5, True, None, 'x', (1, 2)); anything else stays a string.
    Tuples become lists: papermill writes a tuple into the notebook as its string, a list as a list (the config
    turns it back into a tuple)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return list(value) if isinstance(value, tuple) else value


def run_folder(name: str, preset: str, seed: int, output_root: Path | None = None) -> Path:
    """`<output_root or runs>/<notebook>/<preset>-seed<seed>/`."""
    return (output_root / name / f"{preset}-seed{seed}") if output_root else default_output_dir(name, preset, seed)


def run_notebook(name: str, preset: str, seed: int, params: dict, *, output_root: Path | None = None) -> Path:
    """Execute one notebook with papermill; returns its run folder."""
    import papermill

    from .record import record_section_times

    paths = notebook_paths()
    if name not in paths:
        raise ConfigError("notebook", f"no notebook {name!r}", f"use one of {sorted(paths)} or 'all'")
    declared = {p["name"] for p in papermill.inspect_notebook(str(paths[name])).values()}
    unknown = sorted(set(params) - declared)
    if unknown:
        raise ConfigError(unknown[0], f"{name} has no such parameter", f"use one of {sorted(declared)}")
    # every value checked before a kernel starts (the notebook's first cell would refuse it the same way)
    fields = {k: v for k, v in params.items() if k != "config"}
    resolve_config(name, preset, seed=seed, overrides=params.get("config"), **fields)
    out = run_folder(name, preset, seed, output_root)
    out.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(paths[name]), str(out / f"{name}.ipynb"), kernel_name="python3", cwd=str(paths[name].parent),
        parameters={**params, "preset": preset, "seed": seed, "output_dir": str(out.resolve())},
    )
    record_section_times(out, out / f"{name}.ipynb")
    return out


def print_summary(run_dir: Path) -> None:
    from .record import claims_table, load_metrics, results_table

    metrics = load_metrics(run_dir)
    print(f"\n== {metrics['notebook']} ({metrics['preset']}, seed {metrics['seed']}, {metrics['device']}, "
          f"{metrics['runtime_s']:.0f} s) -> {run_dir}")
    print(results_table(metrics).to_string(float_format=lambda v: f"{v:.4g}"))
    if metrics["claims"]:
        print(claims_table(metrics)[["claim", "holds here", "asserted"]].to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seqnb", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="notebooks and their presets")
    run = sub.add_parser("run", help="execute notebooks with papermill")
    run.add_argument("notebook", help="a notebook name such as 00_quickstart, or 'all'")
    run.add_argument("--preset", default="tiny", choices=PRESET_NAMES)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--output-root", type=Path, default=None, help="default: <repo>/runs")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    bench = sub.add_parser("bench", help="training and generation speed, seqnb vs Trainer, methods vs SFT")
    bench.add_argument("--quick", action="store_true", help="seconds-long smoke run (checks code, not speed)")
    bench.add_argument("--out", type=Path, default=project_root() / "benchmarks")
    calib = sub.add_parser("calibrate", help="claim margins from runs at calibration seeds (not seed 0)")
    calib.add_argument("runs", nargs="+", type=Path, help="run folders (or their metrics.json) of one notebook")
    timings = sub.add_parser("timings", help="wall time per notebook section, from runs' metrics.json")
    timings.add_argument("runs", nargs="+", type=Path, help="run folders (or their metrics.json)")
    timings.add_argument("--readme", type=Path, default=None, help="write the table into this README's block")
    args = parser.parse_args(argv)

    if args.command == "timings":
        from .record import load_metrics, timings_table, write_timings

        table = timings_table([load_metrics(run) for run in args.runs])
        if args.readme:
            write_timings(args.readme, table)
        print(table)
        return 0

    if args.command == "calibrate":
        from .record import calibrate, load_metrics

        try:
            table = calibrate([load_metrics(run) for run in args.runs])
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"calibration seeds {table.attrs['seeds']}: asserted when every run gains and the mean gain is at "
              "least twice its std; margin = half the smallest gain, one significant digit")
        print(table.drop(columns="claim").to_string(float_format=lambda v: f"{v:.4g}"))
        return 0

    if args.command == "bench":
        from .bench import main as run_bench

        print(f"wrote {run_bench(args.out, args.quick)}")
        return 0

    specs, paths = notebook_specs(), notebook_paths()
    if args.command == "list":
        for name, path in paths.items():
            spec = specs.get(name)
            title = spec.title if spec else "(no presets registered)"
            print(f"{name:28s} {title}\n{'':28s} presets: {', '.join(spec.presets) if spec else '-'}")
        return 0
    names = list(paths) if args.notebook == "all" else [args.notebook.removesuffix(".ipynb")]
    params = {k: parse_value(v) for k, v in args.parameter}
    for name, flag in (("preset", "--preset"), ("seed", "--seed"), ("output_dir", "--output-root")):
        if name in params:  # papermill would let the flag's value win, silently
            print(f"error: {ConfigError(name, f'given with -p {name}', f'use {flag} instead')}", file=sys.stderr)
            return 2
    failed = []
    for name in names:
        start = time.time()
        try:
            out = run_notebook(name, args.preset, args.seed, params, output_root=args.output_root)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # papermill raises PapermillExecutionError with the cell's traceback
            failed.append(name)
            if getattr(e, "ename", None) == "ClaimFailed":  # the run finished: show what it measured
                print_summary(run_folder(name, args.preset, args.seed, args.output_root))
                print(f"{name}: {e.evalue}", file=sys.stderr)
            else:
                print(f"{name} failed after {time.time() - start:.0f} s: {e}", file=sys.stderr)
            continue
        print_summary(out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
