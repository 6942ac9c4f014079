"""00_quickstart: teacher-forced SFT of a small decoder on multi-digit addition."""

from __future__ import annotations

from dataclasses import dataclass

from seqnb.config import ConfigError, NotebookSpec, RunConfig, bounded, probability


@dataclass(frozen=True, kw_only=True)
class Config(RunConfig):
    """Notebook 00's parameters, in groups: the addition task; the model. The training loop's own fields
    (max_steps, lr, ...) come from `RunConfig`."""

    # task: a + b with operands of 1..train_digits digits; test also on longer operands
    train_digits: int = bounded(min=1)
    test_digits: int = bounded(min=1)
    n_train: int = bounded(min=1)
    n_test_per_length: int = bounded(min=1)
    reverse_answer: bool = True
    # model: "scratch" builds a GPT-2-style decoder from a config; anything else is a hub id or local folder
    model_name: str = "scratch"
    n_layer: int = bounded(min=1)
    d_model: int = bounded(min=8)
    n_head: int = bounded(min=1)
    dropout: float = probability(0.0)

    def check(self) -> None:
        if self.test_digits < self.train_digits:
            raise ConfigError("test_digits", f"{self.test_digits} is below train_digits ({self.train_digits}): the "
                              "test covers the training lengths and longer ones", f"pass >= {self.train_digits}")
        if self.d_model % self.n_head:
            raise ConfigError("d_model", f"{self.d_model} is not divisible by n_head ({self.n_head})",
                              f"pass a multiple of {self.n_head}")


SPEC = NotebookSpec(
    name="00_quickstart",
    title="Quickstart: teacher-forced SFT on addition",
    config_cls=Config,
    presets={
        "tiny": dict(
            train_digits=3, test_digits=5, n_train=20_000, n_test_per_length=100,
            n_layer=2, d_model=128, n_head=4,
            max_steps=800, batch_size=64, lr=1e-3, weight_decay=0.01, warmup_steps=50,
            eval_every=200, ckpt_every=200, log_every=20,
        ),
        "paper": dict(
            device="cuda", precision="bf16", num_threads=0,
            train_digits=10, test_digits=12, n_train=500_000, n_test_per_length=500,
            n_layer=6, d_model=384, n_head=6,
            max_steps=20_000, batch_size=256, lr=1e-3, weight_decay=0.1, warmup_steps=500,
            eval_every=1_000, ckpt_every=1_000, log_every=50,
        ),
    },
)
