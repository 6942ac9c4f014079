"""05_gemma_encoder: a decoder LM fine-tuned as an encoder (Suganthan et al. 2025, arXiv 2503.02656).

The paper's hyper-parameters could not be read (only the abstract and the Figure 1 caption were readable): every training value in
the `paper` preset is our default, not the authors'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from seqnb.config import ConfigError, NotebookSpec, RunConfig, bounded, probability

TASKS = ("bbc", "sst2", "mrpc", "stsb", "rte", "cola", "qnli", "qqp", "mnli", "msmarco")


@dataclass(frozen=True, kw_only=True)
class Config(RunConfig):
    """Notebook 05's parameters, in groups: the task and backbone; which arms and seeds run; the encoder (pooling,
    probes, padding, lengths); the tiny decoder and its pre-training. The training loop's own fields (max_steps,
    lr, ...) come from `RunConfig`."""

    # which arms and seeds run, and gradient checkpointing (it only trades memory for time): left out of each
    # training run's fingerprint, so a finished run is reused when the grid or the seed list grows
    selection_fields: ClassVar[tuple[str, ...]] = ("seeds", "full_grid", "regression", "retrieval", "real_backbone",
                                                   "pooling_grid", "dropout_grid", "gradient_checkpointing")
    task: str = bounded(choices=TASKS)  # bbc: BBC News (offline); the rest: GLUE / MS MARCO by hub id
    model_name: str = "scratch"  # "scratch": a tiny Gemma 3 pretrained here; else a hub id or local folder
    seeds: tuple[int, ...] = bounded((0,), min=0)  # every arm is fine-tuned once per seed
    full_grid: bool = False  # add last_k1 / attn_query / attn_kv / first_k4 and the padding-mismatch arms
    regression: bool = False  # the sentence-position regression arms (BBC only)
    retrieval: bool = False  # the title → article bi-encoder arms (BBC only)
    real_backbone: bool = False  # also probe the masks of Gemma 3 270M from the offline PyPI package
    pooling_grid: tuple[str, ...] = ("first_k1", "mean")
    dropout_grid: tuple[float, ...] = probability((0.0, 0.1))
    padding_side: str = bounded("right", choices=("right", "left"))
    num_probes: int = bounded(1, min=1)  # attn_query queries / learnable tokens
    kv_probes: int = bounded(8, min=2)  # attn_kv key/value probes (one would make it mean pooling plus a constant)
    temperature: float = bounded(0.05, min=1e-6)  # InfoNCE temperature of the bi-encoder
    group_size: int = bounded(8, min=2)  # MS MARCO re-ranking: 1 positive + group_size-1 negatives
    max_len: int = bounded(min=8)
    min_len: int = bounded(8, min=1)  # bbc only: texts are cut to a random length in [min_len, max_len]
    dataset_dir: str = ""  # a local copy of the GLUE / MS MARCO files (hub layout or save_to_disk); "": the hub id
    gradient_checkpointing: bool = False  # recompute the backbone's activations in the backward pass (less memory)
    # the tiny decoder (ignored for a hub model)
    vocab_size: int = bounded(4000, min=16)
    hidden_size: int = bounded(128, min=8)
    num_layers: int = bounded(2, min=1)
    num_heads: int = bounded(4, min=1)
    num_kv_heads: int = bounded(2, min=1)
    head_dim: int = bounded(32, min=4)
    intermediate_size: int = bounded(256, min=8)
    pretrain_steps: int = bounded(300, min=0)
    pretrain_lr: float = bounded(3e-3, min=0.0)

    def check(self) -> None:
        from seqnb.papers.gemma_encoder.pooling import POOLINGS

        for name in self.pooling_grid:
            with_k = re.fullmatch(r"(first_k|last_k)[1-9]\d*", name)
            if not with_k and (name not in POOLINGS or name.endswith("_k")):
                raise ConfigError("pooling_grid", f"unknown pooling {name!r}", "use first_k<K>, last_k<K> (e.g. "
                                  f"first_k1) or one of {[p for p in POOLINGS if not p.endswith('_k')]}")
        if self.min_len > self.max_len:
            raise ConfigError("min_len", f"{self.min_len} is above max_len ({self.max_len})", f"pass <= {self.max_len}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError("num_kv_heads", f"{self.num_kv_heads} does not divide num_heads ({self.num_heads})",
                              "pass a divisor of num_heads")


SPEC = NotebookSpec(
    name="05_gemma_encoder",
    title="Gemma Encoder: a decoder LM fine-tuned as an encoder (masks, pooling, dropout, padding)",
    config_cls=Config,
    presets={
        "tiny": dict(
            task="bbc", seeds=(0,), regression=True, retrieval=True, max_len=64,
            max_steps=100, batch_size=32, lr=3e-3, weight_decay=0.01, warmup_steps=10,
            log_every=10, eval_every=100, ckpt_every=100,
        ),
        # our defaults (the paper's appendix could not be read); one GLUE task per run, -p task NAME.
        # 32 examples (MS MARCO: 32 groups = 256 sequences) per optimizer step, as 4 micro-batches of 8 with
        # gradient checkpointing; one checkpoint per arm, its end (the weights, ~10 GB)
        "paper": dict(
            device="cuda", precision="bf16", num_threads=0,
            task="sst2", model_name="google/gemma-2-2b", seeds=(0,), full_grid=False,
            pooling_grid=("first_k1", "last_k1", "mean", "attn_query", "attn_kv"), max_len=256,
            max_steps=6_000, batch_size=8, grad_accum=4, gradient_checkpointing=True,
            lr=1e-5, weight_decay=0.01, warmup_steps=360, log_every=50, eval_every=2_000, ckpt_every=6_000,
        ),
    },
)
