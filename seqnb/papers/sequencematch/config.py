"""03_sequencematch: MLE vs BC with backspace augmentation vs SequenceMatch (Cundy & Ermon 2023)."""

from __future__ import annotations

from dataclasses import dataclass

from seqnb.config import ConfigError, NotebookSpec, RunConfig, bounded, probability


@dataclass(frozen=True, kw_only=True)
class Config(RunConfig):
    """Notebook 03's parameters, in groups: the task and its sizes; the model; MLE pretraining; the backspace
    augmentation, the SequenceMatch loss and its rollouts. The training loop's own fields (max_steps, lr, ...)
    come from `RunConfig`."""

    # "permutation": k distinct digits (k in min_k..max_k) -> any permutation of them;
    # "add_or_sub_in_base": the paper's arithmetic sub-task, |operands| <= max_value
    task: str = bounded(choices=("permutation", "add_or_sub_in_base"))
    min_k: int = bounded(4, min=1)
    max_k: int = bounded(8, min=1)
    max_value: int = bounded(1000, min=1)
    # add_or_sub_in_base: the DeepMind mathematics data by hub id or local folder (question, answer; config
    # arithmetic__add_or_sub_in_base), or "" to regenerate questions of the same form (offline)
    dataset_id: str = ""
    n_train: int = bounded(min=1)
    n_eval: int = bounded(min=1)  # held-out prompts for every evaluation
    # model: "scratch" builds a GPT-2-style decoder from a config; anything else is a hub id or local folder
    model_name: str = "scratch"
    n_layer: int = bounded(min=1)
    d_model: int = bounded(min=8)
    n_head: int = bounded(min=1)
    # shared MLE pretraining; then every arm fine-tunes for max_steps at lr
    pretrain_steps: int = bounded(min=0)
    pretrain_lr: float = bounded(min=0.0)
    # backspace augmentation and the SequenceMatch loss
    p_noise: float = probability()  # per answer position: insert a mistake and <bksp> before the gold token
    beta: float = probability()  # L = (1 - beta) BC + beta L_SM
    alpha: float = bounded(min=1e-6)  # chi^2 scale: the term is r^2 / (4 alpha)
    gamma: float = probability()  # discount of V(s') in r = Q(s, a) - gamma V(s')
    lam: float = probability()  # data share of the data/model mixture
    roll_every: int = bounded(min=1)  # optimizer steps between two refreshes of the rollout buffer
    n_rollouts: int = bounded(min=1)  # generations per refresh (each step samples a batch of them)
    rollout_temperature: float = bounded(min=0.0)  # sampling temperature of the rollouts
    max_actions: int = bounded(min=1)  # cap on actions (tokens and <bksp>) per generation

    def check(self) -> None:
        if self.min_k > self.max_k:
            raise ConfigError("min_k", f"{self.min_k} is above max_k ({self.max_k})", f"pass <= {self.max_k}")
        if self.task == "permutation" and self.max_k > 9:
            raise ConfigError("max_k", f"{self.max_k} digits leave no foreign digit to inject", "pass at most 9")


SPEC = NotebookSpec(
    name="03_sequencematch",
    title="SequenceMatch: imitation learning with a backspace action (arXiv 2306.05426)",
    config_cls=Config,
    presets={
        "tiny": dict(
            task="permutation", min_k=4, max_k=8, n_train=20_000, n_eval=300,
            n_layer=2, d_model=128, n_head=4,
            pretrain_steps=800, pretrain_lr=1e-3,
            max_steps=400, batch_size=64, lr=1e-3, warmup_steps=50, eval_every=400, ckpt_every=200,
            log_every=10,
            p_noise=0.25, beta=0.2, alpha=100.0, gamma=1.0, lam=0.5,
            roll_every=50, n_rollouts=256, rollout_temperature=1.0, max_actions=20,
        ),
        # the paper's arithmetic setting with GPT-2 (the paper: Llama-2-7B with QLoRA r 64, alpha 16; the
        # step counts, lr, beta, alpha and the rollout schedule are our choices: the paper's could not be read)
        "paper": dict(
            device="cuda", precision="bf16", num_threads=0,
            task="add_or_sub_in_base", dataset_id="deepmind/math_dataset", max_value=10_000, n_train=100_000,
            n_eval=200,
            model_name="gpt2", n_layer=12, d_model=768, n_head=12,
            pretrain_steps=2_000, pretrain_lr=5e-5,
            max_steps=2_000, batch_size=32, lr=5e-5, warmup_steps=100, eval_every=2_000, ckpt_every=500,
            log_every=50,
            p_noise=0.1, beta=0.5, alpha=10.0, gamma=0.998, lam=0.5,
            roll_every=100, n_rollouts=64, rollout_temperature=1.0, max_actions=32,
        ),
    },
)
