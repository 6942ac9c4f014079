"""`make gpu-check`: what a first GPU run of seqnb meets, in one command on a CUDA machine (about 8 minutes):

1. every notebook at the tiny preset on the GPU (`-p device cuda`), several at once;
2. the benchmark's GPU section (`seqnb bench`: the 124M decoder against Trainer, MFU, peak memory);
3. every notebook's paper code path (`seqnb.rehearsal`) on the GPU, on from-scratch models of the paper models'
   own sizes, built from the committed `seqnb/paper_models/*/config.json` (a lent GPU machine cannot reach the
   hub), with each run's peak GPU memory beside `seqnb.memory`'s estimate for the same shapes.

Results: `runs/gpu-check/summary.json` (and each run's folder) and `benchmarks/results-gpu.json`. Without CUDA it
stops with a message; `plan()` and `paper_size_models()` run anywhere (the test suite exercises them on the CPU).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .config import project_root

# the paper rehearsal on the GPU, per notebook: config fields on top of seqnb.rehearsal.REHEARSAL's (05: two of
# its five poolers, so that ten 2.6B-parameter arms do not take the whole time)
GPU_REHEARSAL = {"05_gemma_encoder": {"pooling_grid": ("first_k1", "mean")}}


def plan(out: Path) -> list[tuple[str, list[str]]]:
    """The tiny-preset runs: (name, command) per notebook, each writing into `out/tiny`."""
    from .cli import notebook_paths

    return [(name, [sys.executable, "-m", "seqnb.cli", "run", name, "--output-root", str(out / "tiny"),
                    "-p", "device", "cuda"]) for name in notebook_paths()]


def paper_size_models(mirror: Path, ids: list[str] | None = None) -> dict[str, Path]:
    """Replace the small random stand-ins in `mirror` by random models of the paper models' own size (their
    committed config.json), keeping each folder's tokenizer; returns {hub id: folder}."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from .memory import PAPER_MODELS, PAPER_MODELS_DIR

    written = {}
    for hub_id in ids or list(PAPER_MODELS):
        folder = mirror / hub_id
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        config = AutoConfig.from_pretrained(str(PAPER_MODELS_DIR / PAPER_MODELS[hub_id]))
        config.update(dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id))
        if config.is_encoder_decoder:
            config.decoder_start_token_id = tokenizer.pad_token_id
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = auto.from_config(config)
        if folder.is_symlink():  # a link into the offline-model cache: never write through it
            folder.unlink()
        else:
            shutil.rmtree(folder)
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        written[hub_id] = folder
    return written


def _run(name: str, command: list[str], log: Path) -> dict:
    t0 = time.time()
    with log.open("w") as f:
        rc = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT, cwd=project_root())
    return {"notebook": name, "ok": rc == 0, "wall_s": round(time.time() - t0, 1), "log": str(log)}


def main(out: Path | None = None) -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU (torch sees none): run it on a GPU machine with `make gpu-check`.")
        return 2
    out = out or project_root() / "runs" / "gpu-check"
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=3) as pool:  # the tiny models leave the GPU mostly idle
        summary["tiny"] = list(pool.map(lambda job: _run(*job, out / f"{job[0]}-tiny.log"), plan(out)))
    summary["tiny_wall_s"] = round(time.time() - t0, 1)
    summary["bench"] = _run("bench", [sys.executable, "-m", "seqnb.cli", "bench"], out / "bench.log")
    summary["paper"] = _paper_rehearsals(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    ok = all(r["ok"] for r in [*summary["tiny"], summary["bench"], *summary["paper"]])
    return 0 if ok else 1


def _paper_rehearsals(out: Path) -> list[dict]:
    from .papers import resolve_config
    from .memory import paper_memory
    from .rehearsal import REHEARSAL, rehearsal_config, rehearse
    from .standins import write_standins

    mirror = out / "mirror"
    write_standins(mirror)
    paper_size_models(mirror)
    rows = []
    for name in REHEARSAL:
        extra = GPU_REHEARSAL.get(name, {})
        t0 = time.time()
        row = {"notebook": name}
        try:  # the notebook runs in its own kernel: its peak is read from its metrics.json
            run_dir = rehearse(name, mirror=mirror, output_root=out / "paper", device="cuda", config=extra)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            row.update(ok=True, peak_gpu_gib=metrics.get("environment", {}).get("peak_gpu_gib"))
        except Exception as e:  # noqa: BLE001 (recorded, and the check fails at the end)
            row.update(ok=False, error=f"{type(e).__name__}: {e}"[:2000])
        estimate = paper_memory(resolve_config(name, "paper", device="cpu", overrides=rehearsal_config(name, **extra)))
        row.update(wall_s=round(time.time() - t0, 1), estimate_gib=None if estimate is None else estimate.gib)
        rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(main())
