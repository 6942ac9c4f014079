"""01_warmup_generations: SFT vs Warmup Generations (Li et al. 2025, arXiv 2502.12304).

Tiny preset: the PRS-8 toy (pretrained running sums; notebook 01, "A task where a warmup can help").
Paper preset: mT5-base trained on WMT19 de-en and scored on FLORES-200 devtest (the paper's headline setting);
`task` switches to XSum or LogiQA 2.0 (with the model and lengths overridden). Values the paper does not give
(K, L_w, sampling, weight temperature, learning rates, step counts) are our defaults, not the authors'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from seqnb.config import NotebookSpec, RunConfig, bounded


@dataclass(frozen=True, kw_only=True)
class Config(RunConfig):
    """Notebook 01's parameters, in groups: the task; the model; stage 0 (the toy's pre-training); the warmup
    objective; notebook extras (the K sweep, controls, probes); the paper tasks' data. The training loop's own fields
    (max_steps, lr, ...) come from `RunConfig`."""

    # which arms and seeds run (left out of each training run's fingerprint: adding one reuses finished runs)
    selection_fields: ClassVar[tuple[str, ...]] = ("n_sweep", "controls")
    # "running_sums": x = n_digits digits, y = their sum mod 10 (the PRS-n toy); the paper's tasks (paper
    # preset): "translation" (source -> target sentences, WMT19; FLORES-200), "summarization" (document ->
    # summary, XSum), "multiple_choice" (passage, question and options A-D -> the answer letter, LogiQA 2.0)
    task: str = bounded(choices=("running_sums", "translation", "summarization", "multiple_choice"))
    n_digits: int = bounded(8, min=2)
    n_train: int = bounded(min=1)  # stage-1 training examples (tiny: one epoch = max_steps * batch_size)
    n_test: int = bounded(min=1)  # final evaluation
    n_curve: int = bounded(min=1)  # held-out slice for the learning curves (every eval_every steps)
    # model: "scratch" builds a model from a config (arch picks GPT-2-style decoder or T5-style encoder-decoder);
    # anything else is a hub id or local folder
    model_name: str = "scratch"
    arch: str = bounded("decoder", choices=("decoder", "encoder_decoder"))
    n_layer: int = bounded(2, min=1)
    d_model: int = bounded(64, min=8)
    n_head: int = bounded(4, min=1)
    init_std: float = bounded(0.02, min=0.0)  # scratch decoder: initial weight std (GPT-2's default 0.02)
    # stage 0 (tiny only): plain LM pre-training on running-sum documents, a stand-in for a pretrained LM
    pretrain_steps: int = bounded(0, min=0)
    pretrain_lr: float = bounded(1e-3, min=0.0)
    # the warmup objective (notebook 01, "What is the paper's and what is ours"; every value here is our default)
    n_warmups: int = bounded(4, min=1)  # K warmups sampled per training input
    max_warmup_len: int = bounded(8, min=1)  # L_w
    fixed_warmup_len: bool = False  # True: warmups are exactly L_w tokens, `</w>` appended and not scored
    warmup_temperature: float = bounded(1.0, min=0.0)  # sampling temperature of training warmups
    weight_temperature: float = bounded(1.0, min=1e-6)  # beta: w = softmax(b / beta)
    warmup_coef: float = bounded(1.0, min=0.0)  # lambda on log P(c|x)
    # soft: the estimator; hard: best-of-K (V1); baseline: w - 1/K on the warmup term (V2); uniform: w = 1/K, the
    # control without reward weighting
    weights: str = bounded("soft", choices=("soft", "hard", "baseline", "uniform"))
    loss_norm: str = bounded("target", choices=("target", "joint"))  # divide by |y| or by |c| + |y|
    restrict_digits: bool = False  # toy: warmup and answer tokens are sampled and scored over the digits only
    max_answer_len: int = bounded(4, min=1)
    max_prompt_len: int = bounded(512, min=8)  # paper tasks: longer prompts are cut to this many tokens (ours)
    # notebook extras
    n_sweep: tuple[int, ...] = bounded((), min=1)  # other K values trained for the "effect of N" section (same budget)
    controls: bool = True  # the lambda = 0, greedy-draft, pause and oracle-scratchpad controls (toy only)
    probe_steps: tuple[int, ...] = bounded((), min=0)  # stage-1 steps at which the warmups of a few fixed inputs are recorded
    # paper tasks: a hub id or local folder and its config; "" = the task's default (experiment.TEXT_TASKS);
    # an empty dataset_config with a dataset_id of your own means no config
    dataset_id: str = ""
    dataset_config: str = ""
    # the evaluation set, when it is another dataset ("" = the task's: FLORES-200 devtest for translation, else
    # the evaluation split of dataset_id)
    eval_dataset_id: str = ""
    eval_dataset_config: str = ""
    # translation only
    source_lang: str = ""
    target_lang: str = ""
    task_prefix: str = ""


SPEC = NotebookSpec(
    name="01_warmup_generations",
    title="Warmup Generations: unsupervised initial states before the answer (arXiv 2502.12304)",
    config_cls=Config,
    presets={
        # our tiny preset: PRS-8, 2-layer d64 decoder, S0 = S1 = 600, batch 32,
        # K = 4, warmups at T = 0.75, lr 1e-3 with 100 warm-up steps
        "tiny": dict(
            task="running_sums", n_digits=8, n_train=19_200, n_test=1_000, n_curve=300,
            n_layer=2, d_model=64, n_head=4, init_std=0.1,
            pretrain_steps=600, pretrain_lr=1e-3,
            max_steps=600, batch_size=32, lr=1e-3, warmup_steps=100, grad_clip=1.0,
            log_every=20, eval_every=50, ckpt_every=600,
            n_warmups=4, max_warmup_len=8, fixed_warmup_len=True, warmup_temperature=0.75,
            weight_temperature=1.0, warmup_coef=1.0, weights="soft", loss_norm="joint",
            restrict_digits=True, max_answer_len=1,
            n_sweep=(1,), controls=True, probe_steps=(0, 20, 50, 600),
        ),
        # the paper's headline setting (mT5-base, de->en); K, L_w, lr, steps and sampling are our
        # defaults (4, 32, AdamW 3e-4, T = 1), not values read from the paper
        "paper": dict(
            device="cuda", precision="bf16", num_threads=0,
            task="translation", dataset_id="", dataset_config="", source_lang="de",
            target_lang="en", task_prefix="translate German to English: ",
            n_train=200_000, n_test=1_000, n_curve=200,
            model_name="google/mt5-base", arch="encoder_decoder",
            pretrain_steps=0,
            # 32 inputs a step as 4 micro-batches of 8 (x K = 4 warmups: 32 scored sequences each), which
            # fits an 80 GB card (seqnb.memory: about 47 GiB; one batch of 32 would need about 165)
            max_steps=12_500, batch_size=8, grad_accum=4, lr=3e-4, warmup_steps=500, grad_clip=1.0,
            log_every=50, eval_every=2_500, ckpt_every=1_000,
            n_warmups=4, max_warmup_len=32, fixed_warmup_len=False, warmup_temperature=1.0,
            weight_temperature=1.0, warmup_coef=1.0, weights="soft", loss_norm="target",
            restrict_digits=False, max_answer_len=128, max_prompt_len=512,
            n_sweep=(), controls=False, probe_steps=(0, 12_500),
        ),
    },
)
