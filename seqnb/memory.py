"""Peak GPU memory of one training step, estimated on a CPU from a model's config.json alone (no weights).

One AdamW step (fp32 master weights, bf16 autocast, optimizer state already present, as from the second step on)
runs on fake tensors (`FakeTensorMode`, so no GPU is needed), and `MemTracker` reports the peak bytes by kind.
To stay fast, the model is built with n and 2n layers and extrapolated
linearly to the config's depth (every layer holds the same parameters and activations): the peak of each part of
the step (forward, backward and optimizer; first layers, last layers, outside the layers) on its own, since the
overall peak can move from one part to another with depth.

    est = estimate_training_memory(config, batch_size=32, seq_len=256)
    print(memory_report(cfg))   # a notebook's resolved paper config: its largest training step

The figure leaves out CUDA's allocator fragmentation, library workspaces and the CUDA context (about 1 GB): keep a
margin (under 70 GB on an 80 GB card).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker
from transformers import AutoConfig, PretrainedConfig

PAPER_MODELS_DIR = Path(__file__).parent / "paper_models"
PAPER_MODELS = {  # hub id -> folder of its committed config.json
    "gpt2": "gpt2",
    "google/mt5-base": "google--mt5-base",
    "Qwen/Qwen2.5-0.5B": "Qwen--Qwen2.5-0.5B",
    "google/gemma-2-2b": "google--gemma-2-2b",
}
CARD_GB, LIMIT_GB = 80, 70  # the card, and the margin an estimate must stay under (decimal GB)
KINDS = ("parameters", "gradients", "optimizer", "activations", "temporaries", "other")
_KIND_OF = {"Parameter": "parameters", "Buffer": "other", "Gradient": "gradients", "Optstate": "optimizer",
            "Activation": "activations", "Temp": "temporaries", "Other": "other"}


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one training step, in total and by kind (at the moment of the peak; `other` = buffers)."""

    total: int
    parameters: int
    gradients: int
    optimizer: int
    activations: int
    temporaries: int
    other: int
    n_params: int
    model: str = ""
    batch_size: int = 0
    seq_len: int = 0
    target_len: int | None = None
    precision: str = "bf16"
    gradient_checkpointing: bool = False
    seconds: float = 0.0  # time the estimate took

    @property
    def gib(self) -> float:
        return self.total / 2**30

    @property
    def fits(self) -> bool:
        """Under the 70 GB margin of an 80 GB card."""
        return self.total < LIMIT_GB * 10**9

    def by_kind_gib(self) -> dict[str, float]:
        return {k: getattr(self, k) / 2**30 for k in KINDS}

    def shape(self) -> str:
        dec = f" (decoder {self.target_len})" if self.target_len else ""
        return f"batch {self.batch_size} x {self.seq_len}{dec}"

    def __str__(self) -> str:
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in self.by_kind_gib().items() if k != "other" or v >= 0.05)
        prec = "bf16 autocast" if self.precision in ("bf16", "fp16") else "fp32"
        gc = ", gradient checkpointing" if self.gradient_checkpointing else ""
        return (f"{self.gib:.1f} GiB ({kinds}) for {self.model or 'the model'}, {self.shape()}, {prec}, "
                f"fp32 master weights{gc}")


# ----------------------------------------------------------------------------------------------- the estimator
HEADS = ("lm", "pooled")  # lm: the model's LM head; pooled: the base model, mean pooling and an MLP head (05)


def load_config(source: PretrainedConfig | str | Path) -> PretrainedConfig:
    """A config object, a folder holding config.json, a config.json path, or a hub id committed in paper_models/."""
    if isinstance(source, PretrainedConfig):
        return source
    path = Path(source).expanduser()
    if path.name == "config.json" and path.is_file():
        path = path.parent
    if not (path / "config.json").is_file() and str(source) in PAPER_MODELS:
        path = PAPER_MODELS_DIR / PAPER_MODELS[str(source)]
    return AutoConfig.from_pretrained(str(path))


def estimate_training_memory(config: PretrainedConfig | str | Path, *, batch_size: int, seq_len: int,
                             target_len: int | None = None, precision: str = "bf16",
                             gradient_checkpointing: bool = False, head: str = "lm", grad_accum: int = 1,
                             probe_layers: int | None = None) -> MemoryEstimate:
    """Peak memory of one AdamW step on `batch_size` sequences of `seq_len` tokens (encoder-decoders: encoder
    `seq_len`, decoder `target_len`). The loss is a cross-entropy over fp32 logits, as every notebook computes it.
    `precision` "bf16"/"fp16": autocast over fp32 weights; "no": fp32. `grad_accum` > 1: the gradients of earlier
    micro-batches are held during the step. `head`: see HEADS. `probe_layers`: the n of the n / 2n extrapolation
    (default: twice the period of the layer types, i.e. 2, Gemma 2: 4)."""
    config = load_config(config)
    if head not in HEADS:
        raise ValueError(f"parameter 'head': use one of {HEADS}, got {head!r}")
    if precision not in ("bf16", "fp16", "no", "fp32"):
        raise ValueError(f"parameter 'precision': use 'bf16', 'fp16' or 'no', got {precision!r}")
    if config.is_encoder_decoder and not target_len:
        raise ValueError("parameter 'target_len': an encoder-decoder needs the decoder length")
    return _estimate(type(config), config.to_json_string(use_diff=False), batch_size, seq_len,
                     target_len if config.is_encoder_decoder else None, "no" if precision == "fp32" else precision,
                     bool(gradient_checkpointing), head, max(1, int(grad_accum)), probe_layers,
                     getattr(config, "name_or_path", ""))


@functools.lru_cache(maxsize=128)
def _estimate(cls, config_json: str, batch_size, seq_len, target_len, precision, gc, head, grad_accum, probe_layers,
              name) -> MemoryEstimate:
    t0 = time.perf_counter()
    config = cls.from_dict(json.loads(config_json))
    depth, n = _depth(config), probe_layers or 2 * _period(config)
    measure = functools.partial(_measure, batch_size=batch_size, seq_len=seq_len, target_len=target_len,
                                precision=precision, gc=gc, head=head, grad_accum=grad_accum, period=_period(config))
    if depth is None or depth <= 2 * n:
        n_params, parts = measure(config)
        out = max(parts.values(), key=lambda kinds: sum(kinds.values()))
    else:
        (p1, small), (p2, large) = measure(_with_layers(config, n)), measure(_with_layers(config, 2 * n))
        n_params = p1 + (p2 - p1) * (depth - n) // n

        def at_depth(key):
            return {k: max(0, round(small[key][k] + (large[key][k] - small[key][k]) * (depth - n) / n)) for k in KINDS}

        # the peak of every part of the step, each extrapolated on its own (their maximum can move from one part
        # to another with depth, e.g. from the embedding's gradient to the last layer's under checkpointing); the
        # 2n-layer peak is a lower bound
        parts = [at_depth(key) for key in small.keys() & large.keys()] + list(large.values())
        out = max(parts, key=lambda kinds: sum(kinds.values()))
    return MemoryEstimate(total=sum(out.values()), **out, n_params=n_params, model=name or config.model_type,
                          batch_size=batch_size, seq_len=seq_len, target_len=target_len, precision=precision,
                          gradient_checkpointing=gc, seconds=time.perf_counter() - t0)


def _depth(config) -> int | None:
    """The number of layers to extrapolate to (None: measure as is, e.g. an encoder-decoder with unequal stacks)."""
    if config.is_encoder_decoder:
        enc, dec = getattr(config, "num_layers", None), getattr(config, "num_decoder_layers", None)
        return enc if enc is not None and enc == dec else None
    return getattr(config, "num_hidden_layers", None)


def _period(config) -> int:
    """The period of the layer types (1; Gemma 2: 2, sliding then full attention)."""
    types = list(getattr(config, "layer_types", None) or [])
    return next((p for p in range(1, len(types) + 1) if all(t == types[i % p] for i, t in enumerate(types))), 1)


def _with_layers(config, n: int):
    config = copy.deepcopy(config)
    if config.is_encoder_decoder:
        config.num_layers = config.num_decoder_layers = n
    else:
        types = getattr(config, "layer_types", None)
        config.num_hidden_layers = n
        if types:
            config.layer_types = list(types)[:n]
    return config


def _measure(config, *, batch_size, seq_len, target_len, precision, gc, head, grad_accum,
             period) -> tuple[int, dict[tuple, dict[str, int]]]:
    """(number of parameters, {part of the step: its peak bytes by kind}) of one step on fake tensors."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = copy.deepcopy(config)
    config.use_cache = False
    with FakeTensorMode():
        if head == "pooled":
            model = _PooledModel(AutoModel.from_config(config, dtype=torch.float32))
        else:
            auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            model = auto.from_config(config, dtype=torch.float32)
        model.train()
        if gc:
            core = model.backbone if head == "pooled" else model
            (getattr(core, "activation_checkpointing_enable", None) or core.gradient_checkpointing_enable)()
        params = list(model.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4, fused=True)  # as seqnb.train on CUDA
        for p in params:  # one step outside the tracker creates the optimizer state (exp_avg, exp_avg_sq, step)
            p.grad = torch.zeros_like(p)
        opt.step()
        opt.zero_grad(set_to_none=grad_accum == 1)  # with accumulation the gradient buffers stay allocated
        ids = torch.randint(0, config.vocab_size, (batch_size, seq_len))
        dec = torch.randint(0, config.vocab_size, (batch_size, target_len)) if target_len else None
        tracker = _PartTracker(model, _depth(config), period)
        tracker.track_external(model, opt)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16 if precision != "fp16" else torch.float16,
                                  enabled=precision != "no")
        with tracker, _fused_attention():
            with autocast:
                if head == "pooled":
                    out, labels = model(ids), torch.zeros(batch_size, dtype=torch.long)
                elif dec is not None:
                    out, labels = model(input_ids=ids, decoder_input_ids=dec).logits, dec
                else:
                    out, labels = model(input_ids=ids).logits, ids
            F.cross_entropy(out.float().flatten(0, -2), labels.flatten()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    parts = {}
    for key, snap in tracker.parts.items():
        kinds = dict.fromkeys(KINDS, 0)
        for kind, nbytes in snap.items():
            if (name := getattr(kind, "value", kind)) in _KIND_OF:  # skips "Total"
                kinds[_KIND_OF[name]] += nbytes
        parts[key] = kinds
    return sum(p.numel() for p in params), parts


class _PartTracker(MemTracker):
    """A MemTracker that also keeps the peak of each part of the step: (forward / backward / optimizer, which layers
    or outside them, n-th such run). Layers are the first period, the middle or the last period of each stack of
    layers (an nn.ModuleList as long as the model is deep), so that the parts of an n- and a 2n-layer model match."""

    def __init__(self, model, depth: int | None, period: int):
        super().__init__()
        lists = [name for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == depth]
        stacks = [a for a in lists if not any(a.startswith(b + ".") for b in lists)]  # not T5's block.0.layer
        self._layer = re.compile(r"\.(%s)\.(\d+)$" % "|".join(map(re.escape, stacks)) if stacks else r"(?!)")
        self._n_layers, self._period = depth or 0, period
        self._label, self._runs = None, {}
        self.parts: dict[tuple, dict] = {}

    def _where(self) -> tuple:
        phase = "opt" if self._in_opt else "bw" if self._mod_tracker.is_bw else "fw"
        found = [(m[1], int(m[2])) for m in map(self._layer.search, self._mod_tracker.parents) if m]
        if not found or phase == "opt":
            return phase, "outside"
        stack, i = (min if phase == "bw" else max)(found, key=lambda f: f[1])
        where = "first" if i < self._period else "last" if i >= self._n_layers - self._period else "middle"
        return phase, stack, where

    def _update_peak_stats(self, peak_state) -> None:
        """Not kept: MemTracker's per-module peaks (a walk over every module at every op, most of the cost of a
        measurement); the parts above are what the estimate reads."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        res = super().__torch_dispatch__(func, types, args, kwargs)
        label = self._where()
        if label != self._label:
            self._label, self._runs[label] = label, self._runs.get(label, 0) + 1
        key = (*label, self._runs[label])
        snap = next(iter(self._curr_mem_snap.values()), None)
        if snap is not None and snap["Total"] > self.parts.get(key, {}).get("Total", -1):
            self.parts[key] = dict(snap)
        return res


@contextlib.contextmanager
def _fused_attention():
    """CUDA's flash / memory-efficient attention keeps no [B, H, T, T] dropout mask or weights; on the CPU, sdpa
    with dropout falls back to the math kernel, which does. Dropout is dropped from sdpa while measuring."""
    sdpa = F.scaled_dot_product_attention

    def no_dropout(*args, **kwargs):
        if len(args) > 4:
            args = (*args[:4], 0.0, *args[5:])
        kwargs.pop("dropout_p", None)
        return sdpa(*args, **kwargs)

    F.scaled_dot_product_attention = no_dropout
    try:
        yield
    finally:
        F.scaled_dot_product_attention = sdpa


class _PooledModel(torch.nn.Module):
    """05's encoder: backbone -> mean pooling -> MLP head (seqnb.papers.gemma_encoder.method.MLPHead), two outputs."""

    def __init__(self, backbone):
        super().__init__()
        d = backbone.config.hidden_size
        self.backbone = backbone
        self.head = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.Tanh(), torch.nn.Linear(d, 2))

    def forward(self, ids):
        return self.head(self.backbone(input_ids=ids).last_hidden_state.mean(1))


# ------------------------------------------------------------------------------------- the notebooks' paper steps
@dataclass(frozen=True)
class StepShape:
    """The tensors of a notebook's largest training step (`batch_size` rows on the device at once)."""

    batch_size: int
    seq_len: int
    target_len: int | None = None
    head: str = "lm"
    grad_accum: int = 1
    gradient_checkpointing: bool = False


def _quickstart(cfg, mc) -> StepShape:  # <bos> a + b = answer <eos>, operands <= train_digits
    return StepShape(cfg.batch_size, 3 * cfg.train_digits + 5)


def _warmup(cfg, mc) -> StepShape:  # K warmups per input, one scored pass over the B*K sequences (x, c_k, y)
    k = max((cfg.n_warmups, *cfg.n_sweep))
    if mc.is_encoder_decoder:  # encoder x; decoder c_1..c_M </w> y <eos>
        return StepShape(cfg.batch_size * k, cfg.max_prompt_len, cfg.max_warmup_len + cfg.max_answer_len + 2)
    # x <w> c </w> y <eos>; logits from the shortest prompt on, i.e. over the whole width at worst
    return StepShape(cfg.batch_size * k, cfg.max_prompt_len + cfg.max_warmup_len + cfg.max_answer_len + 3)


def _planner(cfg, mc) -> StepShape:  # plain_continue trains the whole LM on documents of <= max_tokens tokens
    return StepShape(cfg.batch_size, cfg.max_tokens)


def _sequencematch(cfg, mc) -> StepShape:  # SM: a data batch and a rollout batch in one graph
    if cfg.task == "add_or_sub_in_base":  # "In base 2, what is -x + -y? ", one token per character at most
        operand = cfg.max_value.bit_length() + 1
        prompt, answer = 25 + 2 * operand, (2 * cfg.max_value).bit_length() + 1
    else:  # permutation: k digits
        prompt, answer = 2 * cfg.max_k + 2, cfg.max_k
    actions = max(cfg.max_actions, 3 * answer + 1)  # data: a mistake and <bksp> before each token at worst
    return StepShape(2 * cfg.batch_size, prompt + actions + 1)


def _self_generated(cfg, mc) -> StepShape:  # the micro-batch, prompt and answer concatenated
    return StepShape(cfg.batch_size, cfg.max_prompt_len + cfg.max_answer_len)


def _gemma_encoder(cfg, mc) -> StepShape:  # msmarco: each row is a group of group_size passages
    rows = cfg.batch_size * (cfg.group_size if cfg.task == "msmarco" else 1)
    return StepShape(rows, cfg.max_len, head="pooled")


# notebook -> (its paper model, the shape of its largest training step from the resolved config)
NOTEBOOKS: dict[str, tuple[str, Callable[[Any, PretrainedConfig], StepShape]]] = {
    "00_quickstart": ("scratch", _quickstart),  # a GPT-2-style decoder built from n_layer / d_model / n_head
    "01_warmup_generations": ("google/mt5-base", _warmup),
    "02_end_to_end_planner": ("gpt2", _planner),
    "03_sequencematch": ("gpt2", _sequencematch),
    "04_self_generated_tokens": ("Qwen/Qwen2.5-0.5B", _self_generated),
    "05_gemma_encoder": ("google/gemma-2-2b", _gemma_encoder),
}


def model_config(cfg) -> PretrainedConfig | None:
    """The config of `cfg.model_name`: a local folder's config.json, a committed paper model, 00's scratch
    decoder; None for anything else (another hub id, another notebook's scratch model)."""
    name = getattr(cfg, "model_name", "scratch")
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return AutoConfig.from_pretrained(str(path))
    if name in PAPER_MODELS:
        config = load_config(name)
        config._name_or_path = name
        return config
    if name == "scratch" and cfg.notebook == "00_quickstart":
        from .papers import paper_module

        build_model = paper_module("00_quickstart", "experiment").build_model
        with torch.device("meta"):  # the notebook's own decoder, for its config only: no weights are made
            config = build_model(cfg)[0].config
        config._name_or_path = "scratch GPT-2-style decoder"
        return config
    return None


def step_shape(cfg) -> StepShape | None:
    """The largest training step of a resolved notebook config (None: unknown notebook or model)."""
    if cfg.notebook not in NOTEBOOKS or (mc := model_config(cfg)) is None:
        return None
    shape = NOTEBOOKS[cfg.notebook][1](cfg, mc)
    return replace(shape, grad_accum=getattr(cfg, "grad_accum", 1),
                   gradient_checkpointing=bool(getattr(cfg, "gradient_checkpointing", False)))


def paper_memory(cfg) -> MemoryEstimate | None:
    """Estimated peak memory of the largest training step of `cfg` (from `resolve_config(notebook, "paper", ...)`);
    None where the model is not known here (no config.json to read)."""
    shape = step_shape(cfg)
    if shape is None:
        return None
    return estimate_training_memory(
        model_config(cfg), batch_size=shape.batch_size, seq_len=shape.seq_len, target_len=shape.target_len,
        precision=cfg.precision, gradient_checkpointing=shape.gradient_checkpointing, head=shape.head,
        grad_accum=shape.grad_accum)


def memory_report(cfg) -> str:
    """One or two lines for a notebook to print before training: the estimate, and what to change if it does not
    fit an 80 GB card with a margin."""
    est = paper_memory(cfg)
    if est is None:
        return f"estimated peak GPU memory: not known for model {getattr(cfg, 'model_name', '?')!r} (no config.json)"
    line = f"estimated peak GPU memory per training step: {est}"
    if est.fits:
        return f"{line}; fits an {CARD_GB} GB card"
    return f"{line}\nWARNING: above the {LIMIT_GB} GB margin of an {CARD_GB} GB card. Fix: {_advice(cfg, est)}"


def _advice(cfg, est: MemoryEstimate) -> str:
    """A micro-batch that fits if activations scale with it (gradients then held in full), and checkpointing."""
    static = 2 * est.parameters + est.optimizer + est.other  # weights and fp32 gradients, 4 bytes per parameter each
    dynamic = max(est.total - est.parameters - est.gradients - est.optimizer - est.other, 1)
    room = LIMIT_GB * 10**9 - static
    fix = []
    b = cfg.batch_size
    while b > 1 and room < dynamic * b / cfg.batch_size:
        b //= 2
    if b < cfg.batch_size and room > 0 and cfg.batch_size % b == 0:
        accum = getattr(cfg, "grad_accum", 1) * cfg.batch_size // b
        fix.append(f"a smaller micro-batch with the same effective batch, about -p batch_size {b} -p grad_accum "
                   f"{accum}")
    if not est.gradient_checkpointing:
        flag = ("-p gradient_checkpointing true" if hasattr(cfg, "gradient_checkpointing")
                else "gradient checkpointing (not a parameter of this notebook yet)")
        fix.append(flag)
    return " or ".join(fix) or "a smaller model or shorter sequences (-p max_len / max_prompt_len)"


# the paper presets and the tasks each offers (the README's paper-size table, `python -m seqnb.memory`)
PAPER_TASKS = {
    "00_quickstart": (None,), "01_warmup_generations": ("translation", "summarization", "multiple_choice"),
    "02_end_to_end_planner": (None,), "03_sequencematch": (None,),
    "04_self_generated_tokens": ("xsum", "dolly", "gsm8k"),
    "05_gemma_encoder": ("sst2", "mrpc", "stsb", "rte", "cola", "qnli", "qqp", "mnli", "msmarco"),
}
H100_BF16_FLOPS, MFU = 989e12, 0.4  # dense bf16 peak of an H100 SXM, and an MFU a tuned loop reaches


def paper_table() -> str:
    """Markdown: per paper preset and task, the model, the micro-batch, the estimated peak memory, and the time of one
    optimizer step at 40% MFU on an H100 (6 N x tokens, every sequence at its maximum length: an upper bound)."""
    from .papers import resolve_config

    lines = ["| notebook | task | model | micro-batch x accumulation | peak GPU memory (estimate) | s / step at 40% "
             "MFU | steps per arm |", "|---|---|---|---|---|---|---|"]
    for notebook, tasks in PAPER_TASKS.items():
        for task in tasks:
            cfg = resolve_config(notebook, "paper", device="cpu", **({"task": task} if task else {}))
            est, shape = paper_memory(cfg), step_shape(cfg)
            tokens = shape.batch_size * (shape.seq_len + (shape.target_len or 0)) * shape.grad_accum
            seconds = 6 * est.n_params * tokens / (H100_BF16_FLOPS * MFU)
            lines.append(f"| {notebook} | {task or '-'} | {est.model} | {est.shape()} x {shape.grad_accum} | "
                         f"{est.gib:.1f} GiB | {seconds:.2g} | {cfg.max_steps:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(paper_table())
