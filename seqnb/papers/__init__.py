"""The papers, one folder each, and the registry that finds a notebook's folder by name.

Every folder holds the same modules: `config.py` (the notebook's `Config` and its presets, `SPEC`), `method.py` (the
paper's math, usable on your own model without the rest), `experiment.py` (the notebook's runs: data, arms, results
and claims) and `views.py` (figures and explorers), plus modules named after a concept of that paper. `method.py`
imports neither `experiment` nor `views`; nothing outside `seqnb.papers` imports a paper. Adding a paper: copy a
folder, add one line to `PAPERS`, write its notebook.

Folders are imported when asked for, so importing this registry imports no paper.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any, Mapping

from seqnb.config import ConfigError, NotebookSpec, RunConfig

# notebook name (its file stem) -> folder under seqnb/papers/
PAPERS = {
    "00_quickstart": "quickstart",
    "01_warmup_generations": "warmup_generations",
    "02_end_to_end_planner": "end_to_end_planner",
    "03_sequencematch": "sequencematch",
    "04_self_generated_tokens": "self_generated_tokens",
    "05_gemma_encoder": "gemma_encoder",
}


def paper_module(notebook: str, module: str) -> ModuleType:
    """`seqnb.papers.<folder>.<module>` of a registered notebook, e.g. `paper_module("03_sequencematch", "config")`."""
    if notebook not in PAPERS:
        raise ConfigError("notebook", f"unknown notebook {notebook!r}", f"use one of {sorted(PAPERS)}")
    return importlib.import_module(f"{__name__}.{PAPERS[notebook]}.{module}")


def notebook_specs() -> dict[str, NotebookSpec]:
    """Every registered notebook's config class and presets."""
    return {name: paper_module(name, "config").SPEC for name in PAPERS}


def resolve_config(notebook: str, preset: str = "tiny", overrides: dict[str, Any] | None = None,
                   **params: Any) -> RunConfig:
    """The notebook's validated config: its preset, then the caller's non-None values (`NotebookSpec.resolve`)."""
    return paper_module(notebook, "config").SPEC.resolve(preset, overrides, **params)


def notebook_config(notebook: str, parameters: Mapping[str, Any]) -> RunConfig:
    """A notebook's config from its parameters cell: pass `globals()`. Every name there that is a field of the
    notebook's config is an override (None keeps the preset's value), `preset` picks the preset and `config` (a
    dict) sets any other field, as in `resolve_config`."""
    spec = paper_module(notebook, "config").SPEC
    fields = {f.name for f in dataclasses.fields(spec.config_cls)} - {"notebook", "preset"}
    values = {k: v for k, v in parameters.items() if k in fields}
    return spec.resolve(parameters.get("preset", "tiny"), parameters.get("config"), **values)
