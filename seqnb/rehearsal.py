"""Rehearse a notebook's `paper` preset before renting a GPU: the same notebook, at `--preset paper`, end to end
through papermill, with every hub id answered by a local stand-in (`seqnb.standins`, found through
`SEQNB_HUB_MIRROR`) and the sizes cut to a few steps (`REHEARSAL`)::

    from seqnb.rehearsal import rehearse
    run_dir = rehearse("04_self_generated_tokens", mirror="/tmp/mirror", output_root="/tmp/runs")

The paper's code path runs as it would at paper size (its hub ids, loaders, collators, tokenizers' quirks, bf16
autocast, metrics and figures); only the sizes and the device (CPU) differ, so its numbers mean nothing. On a GPU
machine `device="cuda"` rehearses with the same sizes on the GPU (`make gpu-check`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .tasks.hub import MIRROR_ENV

_LOOP = dict(max_steps=2, warmup_steps=0, log_every=1, eval_every=2, ckpt_every=2)

# per notebook: the notebook parameters of a rehearsal (besides preset, seed and device); every other value is
# the paper preset's
REHEARSAL: dict[str, dict[str, Any]] = {
    "00_quickstart": dict(config=dict(_LOOP, n_train=256, n_test_per_length=4, batch_size=8)),
    "01_warmup_generations": dict(config=dict(
        _LOOP, n_train=16, n_test=4, n_curve=4, batch_size=4, grad_accum=2, n_warmups=2, max_warmup_len=4, max_answer_len=8,
        max_prompt_len=48, probe_steps=(0, 2))),
    "02_end_to_end_planner": dict(config=dict(
        _LOOP, n_train_docs=24, n_test_docs=4, k=4, planner_ff_dim=32, planner_steps=2, batch_size=4,
        planner_batch_size=4, eval_batch_size=4, max_tokens=48, mix_ratios=(0.5,))),
    "03_sequencematch": dict(config=dict(
        _LOOP, n_train=40, n_eval=4, pretrain_steps=2, batch_size=4, roll_every=1, n_rollouts=4, max_actions=12,
        max_value=20)),
    "04_self_generated_tokens": dict(config=dict(
        _LOOP, n_train=8, n_eval=2, max_prompt_len=48, max_answer_len=8, batch_size=4, grad_accum=1,
        eval_batch_size=4, eps_start_epochs=0.5, gen_every_epochs=0.5)),
    "05_gemma_encoder": dict(config=dict(_LOOP, max_len=32, batch_size=4, grad_accum=2)),
}


def rehearsal_config(notebook: str, **fields: Any) -> dict[str, Any]:
    """The config fields of `notebook`'s rehearsal (`REHEARSAL`), with `fields` on top."""
    if notebook not in REHEARSAL:
        raise KeyError(f"parameter 'notebook': no rehearsal for {notebook!r}, use one of {sorted(REHEARSAL)}")
    return {**REHEARSAL[notebook]["config"], **fields}


def rehearse(notebook: str, *, mirror: str | Path, output_root: str | Path, device: str = "cpu",
             config: dict[str, Any] | None = None) -> Path:
    """Run `notebook` at the paper preset with the stand-ins in `mirror` (written beforehand with
    `seqnb.standins.write_standins`), at `rehearsal_config(notebook, **config)`; returns its run folder, which
    holds metrics.json and the figures."""
    from .cli import run_notebook

    fields = rehearsal_config(notebook, **(config or {}))
    # papermill writes a tuple as its string: lists (the config turns them back into tuples)
    values = {"device": device, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}
    previous = os.environ.get(MIRROR_ENV)
    os.environ[MIRROR_ENV] = str(Path(mirror).resolve())  # the notebook's kernel inherits it
    try:
        return run_notebook(notebook, "paper", 0, values, output_root=Path(output_root))
    finally:
        if previous is None:
            os.environ.pop(MIRROR_ENV)
        else:
            os.environ[MIRROR_ENV] = previous
