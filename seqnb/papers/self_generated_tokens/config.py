"""04_self_generated_tokens: teacher forcing vs scheduled sampling vs BASH vs RAC (Cen et al., arXiv 2410.14655).

Only the paper's abstract could be read: the paper preset's model,
datasets and every hyper-parameter are our choices for the three task types the abstract names, not the
authors'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from seqnb.config import ConfigError, NotebookSpec, RunConfig, bounded, probability

TASKS = ("sort", "xsum", "dolly", "gsm8k")


@dataclass(frozen=True, kw_only=True)
class Config(RunConfig):
    """Notebook 04's parameters, in groups: the task and its sizes; the model; the methods (schedule, mixing,
    offline generation, RAC); evaluation. The training loop's own fields (max_steps, lr, ...) come from
    `RunConfig`."""

    # which arms and seeds run (left out of each training run's fingerprint: adding one reuses finished runs)
    selection_fields: ClassVar[tuple[str, ...]] = ("arms", "n_seeds")
    # "sort": N i.i.d. digits -> sorted (tiny); "xsum" / "dolly" / "gsm8k": the three task types of the paper
    task: str = bounded(choices=TASKS)
    length: int = bounded(16, min=2)  # sort: digits per example (= answer length)
    n_train: int = bounded(min=1)  # the fixed training pool (BASH/RAC generate one answer per row per round)
    n_eval: int = bounded(min=1)  # the fixed evaluation set of every exposure-bias curve
    eval_seed: int = bounded(12345, min=0)  # the evaluation set is the same for every seed
    dataset_id: str = ""  # hub id or local folder of the text task ("" = the task's default id)
    max_prompt_len: int = bounded(512, min=8)  # text tasks: tokens kept from the prompt (its end is kept)
    max_answer_len: int = bounded(256, min=2)  # text tasks: reference tokens kept, and the generation cap
    # model: "scratch" builds a GPT-2-style decoder from a config; anything else is a hub id or local folder
    model_name: str = "scratch"
    n_layer: int = bounded(2, min=1)
    d_model: int = bounded(64, min=8)
    n_head: int = bounded(4, min=1)
    # the methods
    # "tf" is the baseline of every comparison; "bash_tf" is BASH's second reading, "noise" its random-token control
    arms: tuple[str, ...] = ("tf", "ss", "bash", "bash_tf", "rac", "noise")
    n_seeds: int = bounded(1, min=1)  # seeds seed, seed+1, ...: results are seed means with <metric>_std
    schedule: str = bounded("linear", choices=("linear", "exp", "invsigmoid", "const"))
    p_max: float = probability(0.5)  # eps(s) rises from 0 to p_max
    eps_start_epochs: float = bounded(1.0, min=0.0)  # pure teacher forcing for this many epochs
    gen_every_epochs: float = bounded(2.0, min=0.01)  # BASH/RAC: one offline generation round every ...
    granularity: str = bounded("token", choices=("token", "sequence", "batch"))  # BASH/SS coin
    rac_alignment: str = bounded("position", choices=("position", "edit"))
    w_corr: float = bounded(1.0, min=0.0)  # RAC: weight of the predictions made after an own error
    embedder: str = "ngram"  # "ngram" (offline stand-in), "minilm", a hub id or a local folder
    eval_batch_size: int = bounded(512, min=1)

    def check(self) -> None:
        from seqnb.papers.self_generated_tokens.method import ARMS

        bad = [a for a in self.arms if a not in ARMS]
        if bad:
            raise ConfigError("arms", f"unknown {bad}", f"use some of {list(ARMS)}")
        if "tf" not in self.arms:
            raise ConfigError("arms", f"{list(self.arms)} lacks 'tf', the baseline every arm is compared with",
                              "add 'tf'")


SPEC = NotebookSpec(
    name="04_self_generated_tokens",
    title="Self-generated tokens: teacher forcing vs scheduled sampling vs BASH vs RAC (arXiv 2410.14655)",
    config_cls=Config,
    presets={
        # spec section 10.2: sort N=16, 2048-example pool, 6 epochs = 192 steps, linear eps to 0.5 after
        # one teacher-forced epoch, offline rounds every 2 epochs; two seeds a run (the baseline swings across
        # seeds), exposure curves every 1.5 epochs
        "tiny": dict(
            task="sort", length=16, n_train=2048, n_eval=1024, n_seeds=2,
            n_layer=2, d_model=64, n_head=4,
            max_steps=192, batch_size=64, lr=3e-3, weight_decay=0.01, warmup_steps=30, grad_clip=1.0,
            log_every=8, eval_every=48, ckpt_every=96,
            schedule="linear", p_max=0.5, eps_start_epochs=1.0, gen_every_epochs=2.0, embedder="ngram",
        ),
        # our choices (the paper's models, data sizes and hyper-parameters could not be read): Qwen2.5-0.5B
        # full fine-tune on XSum, 3 epochs over a 20k pool at effective batch 64, lr 1e-5 cosine with 3%
        # warm-up, eps linear to 0.5 over epochs 2-3, one offline round per epoch, MiniLM distance
        "paper": dict(
            device="cuda", precision="bf16", num_threads=0,
            task="xsum", n_train=20_000, n_eval=500, max_prompt_len=768, max_answer_len=128,
            model_name="Qwen/Qwen2.5-0.5B",
            max_steps=936, batch_size=16, grad_accum=4, lr=1e-5, weight_decay=0.0, warmup_steps=28,
            log_every=10, eval_every=312, ckpt_every=100,
            schedule="linear", p_max=0.5, eps_start_epochs=1.0, gen_every_epochs=1.0,
            rac_alignment="edit", embedder="minilm", eval_batch_size=64,
        ),
    },
)
