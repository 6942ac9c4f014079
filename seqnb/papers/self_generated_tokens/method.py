r"""Self-generated tokens in training (Cen et al., TMLR 2025, arXiv 2410.14655): the schedules, the mixed
contexts of its arms (the paper's two methods, two baselines, BASH's second reading and a random-token control), and
their step function.

Every arm minimises the same reference-target loss on a (possibly) mixed context

    L(theta) = - 1/|y| sum_t log p_theta(y_t | x, u_<t),     u_t = m_t * yhat_t + (1 - m_t) * y_t

and they differ only in where yhat comes from and how the mask m is drawn:

- `tf`:   m = 0 (teacher forcing).
- `ss`:   classic scheduled sampling (Bengio et al. 2015) in the two-pass transformer form of Mihaylova &
          Martins 2019: yhat_t = argmax p(. | x, y_<t) from a no-grad pass on the gold prefix, m_t ~ Bernoulli(eps).
- `bash`: batch-scheduled sampling: yhat = the model's own free-running greedy answer, generated offline by a
          snapshot every few epochs; m_t ~ Bernoulli(eps) per (example, position) (paper: "stochastically choose"
          between gold and own token, "interleaving"; the granularity is our reading).
- `bash_tf`: the other reading of BASH ("offline scheduled sampling"): yhat_t = argmax p(. | x, y_<t), the
          snapshot's teacher-forced predictions for the whole pool, computed offline in the same rounds; the
          same per-token coin as `bash`.
- `noise`: a control for `bash`: the same coins on the same offline answers, but every own token that differs
          from the reference is replaced by a uniformly random wrong token, so the context is corrupted at the same
          positions and rate as BASH's while the tokens are no longer the model's own.
- `rac`:  reference-answer-based correction: with probability eps an example keeps the model's own prefix
          yhat_1..yhat_c (c >= the first own error k) and every target stays the reference, so the model learns
          to return to the reference after its own mistakes (the construction is ours: notebook 04 shows it).

Sampled tokens are integers produced without gradient: nothing flows through the sampling.
Tensors use 0-based answer positions a = 0..T-1; `targets[:, i]` is what the logits at sequence index i predict.

Taught in notebooks/04_self_generated_tokens.ipynb, § "The schedule $\varepsilon(s)$"; § "What each arm actually trains on".
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from seqnb.collate import IGNORE_INDEX, pad_sequences
from seqnb.decoding import greedy, restrict
from seqnb.metrics import prefix_edit_distances
from seqnb.runtime import generator_state, restore_generator, seeded_generator

ARMS = ("tf", "ss", "bash", "rac", "bash_tf", "noise")
SCHEDULES = ("linear", "exp", "invsigmoid", "const")
GRANULARITIES = ("token", "sequence", "batch")


# ----------------------------------------------------------------------------------------------- schedules
def schedule(name: str, u: float, p_max: float = 1.0) -> float:
    """Probability of using a self-generated token at training progress u in [0, 1] (clipped).

    Bengio et al. give the probability of the *ground truth*; this is its complement, scaled by p_max:
    linear u; exp 1 - 0.05^u; invsigmoid 1 - 1/(1 + exp(10 (u - 0.5))); const 1.
    """
    if name not in SCHEDULES:
        raise ValueError(f"parameter 'schedule': unknown {name!r}, use one of {list(SCHEDULES)}")
    if not 0.0 <= p_max <= 1.0:
        raise ValueError(f"parameter 'p_max': must be in [0, 1], got {p_max}")
    u = min(max(float(u), 0.0), 1.0)
    value = {"linear": u, "exp": 1.0 - 0.05**u, "invsigmoid": 1.0 - 1.0 / (1.0 + math.exp(10.0 * (u - 0.5))),
             "const": 1.0}[name]
    return p_max * value


def epsilon(step: int, *, start: int, total: int, name: str, p_max: float) -> float:
    """eps(step): 0 during the teacher-forced warm-up (step < start), then `schedule` over [start, total]."""
    if step < start:
        return 0.0
    return schedule(name, (step - start) / max(total - start, 1), p_max)


# ------------------------------------------------------------------------------------------------- masks
def mixing_mask(valid: torch.Tensor, eps: float, generator: torch.Generator,
                granularity: str = "token") -> torch.Tensor:
    """Bool [B, T]: where the input is the model's token. `valid` marks positions that have one
    (t < min(|yhat|, |y|)). One coin per (example, position), per example, or per batch."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"parameter 'granularity': unknown {granularity!r}, use one of {list(GRANULARITIES)}")
    B, T = valid.shape
    shape = {"token": (B, T), "sequence": (B, 1), "batch": (1, 1)}[granularity]
    # m_t ~ Bernoulli(eps), one coin per position, per example or per batch
    coins = torch.rand(shape, generator=generator, device=valid.device) < eps
    return coins.expand(B, T) & valid


def mix(y: torch.Tensor, y_hat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """u = yhat where mask else y (all [B, T])."""
    # u_t = m_t yhat_t + (1 - m_t) y_t
    return torch.where(mask, y_hat, y)


def first_deviation(y: torch.Tensor, y_hat: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per row, the first valid position where yhat != y, or -1 when the model's answer matches."""
    wrong = (y != y_hat) & valid
    T = y.shape[1]
    first = torch.where(wrong, torch.arange(T, device=y.device), T).min(dim=1).values
    return torch.where(first < T, first, -1)


def rac_cut(y: torch.Tensor, y_hat: torch.Tensor, valid: torch.Tensor, eps: float,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """RAC cut points: per row, k = first own error; with probability eps, c ~ Uniform{k, ..., last valid};
    otherwise (or when yhat has no error) c = -1 (plain teacher forcing). Returns (k, c)."""
    # k = min {t : yhat_t != y_t}, the model's first own error
    k = first_deviation(y, y_hat, valid)
    last = valid.long().sum(dim=1) - 1
    B = y.shape[0]
    # with probability eps the row keeps its own prefix yhat_0..yhat_c, c ~ Uniform{k, ..., last}
    use = torch.rand(B, generator=generator, device=y.device) < eps
    span = (last - k + 1).clamp(min=1)
    c = k + (torch.rand(B, generator=generator, device=y.device) * span).long().clamp(max=span - 1)
    c = torch.where(use & (k >= 0), c, -1)
    return k, c


def random_wrong_tokens(y: torch.Tensor, candidates: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per position, a token drawn uniformly from `candidates` (sorted ids) other than y's own token (any
    candidate where y's token is not one of them)."""
    n = candidates.numel()
    if n < 2:
        raise ValueError(f"random tokens need at least 2 candidate tokens, got {n}")
    pos = torch.searchsorted(candidates, y).clamp(max=n - 1)
    is_candidate = candidates[pos] == y
    # uniform over the n - 1 others: step 1..n-1 places past y's own index (mod n)
    step = torch.randint(1, n, y.shape, generator=generator, device=y.device)
    anywhere = torch.randint(0, n, y.shape, generator=generator, device=y.device)
    return candidates[torch.where(is_candidate, (pos + step) % n, anywhere)]


def rac_mask(c: torch.Tensor, T: int) -> torch.Tensor:
    """Positions 0..c take the model's own tokens (a contiguous free-running prefix)."""
    return torch.arange(T, device=c.device)[None, :] <= c[:, None]


def rac_edit_example(y: list[int], y_hat: list[int], k: int, c: int) -> tuple[list[int], list[int]]:
    """RAC for free text, where yhat and y drift in length: keep yhat_0..yhat_c, then continue with the
    reference suffix after the reference token aligned (Levenshtein, semi-global) to the end of that prefix.

    Returns answer (inputs, targets): targets[a] is predicted from prompt + inputs[:a]; reference tokens for
    a <= k, ignored inside the kept own tokens after the first error, the reference suffix after the cut.
    """
    own = y_hat[: c + 1]
    j = aligned_end(own, y)
    inputs = own + y[j:]
    targets = y[: k + 1] + [IGNORE_INDEX] * (c - k) + y[j:]
    return inputs, targets


def aligned_end(a: list[int], b: list[int]) -> int:
    """The j minimising the edit distance between `a` and the prefix b[:j] (ties: the longest)."""
    distances = prefix_edit_distances(a, b)
    best = min(distances)
    return max(j for j, d in enumerate(distances) if d == best)


# -------------------------------------------------------------------------------------------- batches
@dataclass
class Batch:
    """A right-padded batch: prompt + answer. `answers` [B, T] (pad beyond `ans_len`), `ans_start` [B] is the
    sequence index of answer position 0, `idx` [B] the rows' indices in the training pool."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    answers: torch.Tensor
    ans_start: torch.Tensor
    ans_len: torch.Tensor
    idx: torch.Tensor

    def to(self, device) -> "Batch":
        return Batch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))

    @property
    def answer_valid(self) -> torch.Tensor:
        return torch.arange(self.answers.shape[1], device=self.answers.device)[None, :] < self.ans_len[:, None]

    def answer_index(self) -> torch.Tensor:
        """[B, T] sequence index of each answer position (clamped into the row)."""
        T = self.answers.shape[1]
        return (self.ans_start[:, None] + torch.arange(T, device=self.answers.device)).clamp(
            max=self.input_ids.shape[1] - 1)

    def with_answers(self, new: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """input_ids with answer positions replaced by `new` where `mask`."""
        index = self.answer_index()
        current = self.input_ids.gather(1, index)
        return self.input_ids.scatter(1, index, torch.where(mask & self.answer_valid, new, current))

    def targets(self, answer_targets: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L]: targets[:, i] = the answer token predicted by the logits at i (reference by default)."""
        tgt = self.answers if answer_targets is None else answer_targets
        B, L = self.input_ids.shape
        valid = self.answer_valid
        # answer position a is predicted at ans_start + a - 1; padding positions write to a spare column L
        index = torch.where(valid, self.ans_start[:, None] + torch.arange(tgt.shape[1], device=tgt.device) - 1, L)
        out = torch.full((B, L + 1), IGNORE_INDEX, dtype=tgt.dtype, device=tgt.device)
        return out.scatter(1, index, torch.where(valid, tgt, IGNORE_INDEX))[:, :L]


def collate(rows: list[dict], pad_id: int) -> Batch:
    """Rows {prompt: ids, answer: ids, idx} -> a right-padded `Batch`."""
    ids, att = pad_sequences([r["prompt"] + r["answer"] for r in rows], pad_id, mask=True)
    answers = pad_sequences([r["answer"] for r in rows], pad_id)
    return Batch(ids, att, answers, torch.tensor([len(r["prompt"]) for r in rows]),
                 torch.tensor([len(r["answer"]) for r in rows]), torch.tensor([r.get("idx", -1) for r in rows]))


def reference_loss(model, input_ids, attention_mask, targets, weights=None) -> torch.Tensor:
    """Mean (weighted) cross-entropy of `targets` (IGNORE_INDEX skipped) under the model on `input_ids`."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    # - log p_theta(y_t | x, u_<t) at every target position
    nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    keep = (targets != IGNORE_INDEX).float()
    w = keep if weights is None else keep * weights
    # L = 1/|y| sum_t w_t (- log p_theta(y_t | x, u_<t))
    return (nll * w).sum() / keep.sum().clamp(min=1)


@torch.no_grad()
def teacher_forced_predictions(model, batch: Batch, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """SS pass one: yhat_a = argmax p(. | x, y_<a) for every answer position, in eval mode, no gradient."""
    was_training = model.training
    model.eval()
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    model.train(was_training)
    index = (batch.answer_index() - 1).clamp(min=0)
    picked = logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]))
    return greedy(restrict(picked, allowed))


# ------------------------------------------------------------------------------------------------- cost
@dataclass
class Cost:
    """Extra work beyond teacher forcing: no-grad forward passes (batches), offline generation."""

    extra_fwd: int = 0  # no-grad forward passes over a training batch (SS pass one)
    mixed_steps: int = 0  # steps whose batch had eps > 0
    gen_rounds: int = 0
    gen_tokens: int | torch.Tensor = 0
    gen_s: float = 0.0
    mixed_tokens: int | torch.Tensor = 0  # input tokens replaced by model tokens


# -------------------------------------------------------------------------------------------- step fn
@dataclass
class SelfGenStep:
    """`step_fn(model, batch, step)` for `seqnb.train.train`, one class for every arm; the mixing rate
    eps(step) follows `schedule` from `eps_start` to `total_steps`.

    `regenerate(model) -> (yhat [M, T], yhat_len [M])` produces the offline pool (every arm but TF and SS) for
    every training row (the batch's `idx` says which pool row belongs to which batch row); it is called when a round is due
    (every `gen_every` steps, the first at the first step with eps > 0). `state_dict` holds the pool, the
    sampling generator's state and the cost, so a resumed run continues bit-identically.

    Example::

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from seqnb.papers.self_generated_tokens.exposure import greedy_answers
        from seqnb.papers.self_generated_tokens.method import SelfGenStep, collate

        model = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M", dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M")
        eos = tokenizer.eos_token_id
        pairs = [("The capital of France is", " Paris, on the Seine."), ("Water boils at", " 100 degrees Celsius.")]
        rows = [{"prompt": tokenizer(x).input_ids, "answer": tokenizer(y).input_ids + [eos], "idx": i}
                for i, (x, y) in enumerate(pairs)]  # idx: the row's place in the pool of own answers
        def regenerate(m):  # the offline pool: the model's own greedy answer (16 tokens at most) to every prompt
            return greedy_answers(m, [r["prompt"] for r in rows], 16, pad_id=eos, eos_id=eos)
        step = SelfGenStep(arm="bash", eps_start=0, total_steps=2, schedule="const", p_max=0.5, regenerate=regenerate,
                           pad_id=eos, eos_id=eos)
        batch = collate(rows, pad_id=eos)
        loss, logs = step(model, batch, 0)
        loss.backward()
    """

    arm: str
    eps_start: int
    total_steps: int
    schedule: str = "linear"
    p_max: float = 0.5
    granularity: str = "token"
    gen_every: int = 1
    seed: int = 0
    allowed: torch.Tensor | None = None
    regenerate: Callable[[torch.nn.Module], tuple[torch.Tensor, torch.Tensor]] | None = None
    rac_alignment: str = "position"
    w_corr: float = 1.0
    pad_id: int = 0
    eos_id: int | None = None  # the end token: an own answer's EOS is never mixed in or kept in a RAC prefix
    vocab_size: int | None = None  # `noise` without `allowed`: random tokens from the vocabulary (not pad/EOS)
    cost: Cost = field(default_factory=Cost)

    def __post_init__(self):
        if self.arm not in ARMS:
            raise ValueError(f"parameter 'arms': unknown arm {self.arm!r}, use some of {list(ARMS)}")
        if self.arm == "noise" and self.allowed is None and self.vocab_size is None:
            raise ValueError("arm 'noise' needs `allowed` or `vocab_size` (where its random tokens come from)")
        if self.arm not in ("tf", "ss") and self.regenerate is None:
            raise ValueError(f"arm {self.arm!r} needs `regenerate` (the offline generation of the pool)")
        if self.rac_alignment not in ("position", "edit"):
            raise ValueError(f"parameter 'rac_alignment': unknown {self.rac_alignment!r}, use 'position' or 'edit'")
        self.generator = None  # made on the batch's device at the first mixed step
        self.pool, self.pool_step = None, None
        schedule(self.schedule, 0.0, self.p_max)  # validates both

    def eps(self, step: int) -> float:
        return epsilon(step, start=self.eps_start, total=self.total_steps, name=self.schedule, p_max=self.p_max)

    def state_dict(self) -> dict:
        return {"generator": generator_state(self.generator),
                "pool": self.pool, "pool_step": self.pool_step, "cost": dataclasses.asdict(self.cost)}

    def load_state_dict(self, state: dict) -> None:
        self.generator = restore_generator(state["generator"])
        self.pool, self.pool_step, self.cost = state["pool"], state["pool_step"], Cost(**state["cost"])

    def _pool(self, model, step: int):
        if self.pool is None or step - self.pool_step >= self.gen_every:
            t0 = time.perf_counter()
            y_hat, lens = self.regenerate(model)
            self.cost.gen_s += time.perf_counter() - t0
            self.cost.gen_rounds += 1
            self.cost.gen_tokens = self.cost.gen_tokens + lens.sum()
            self.pool, self.pool_step = (y_hat, lens), step
        return self.pool

    def build(self, model, batch: Batch, step: int):
        """(inputs, attention_mask, targets, weights, logs) for this arm at optimizer step `step`."""
        eps = self.eps(step) if self.arm != "tf" else 0.0
        targets = batch.targets()
        if eps <= 0.0:
            return batch.input_ids, batch.attention_mask, targets, None, {"eps": eps}
        self.cost.mixed_steps += 1
        if self.generator is None:
            self.generator = seeded_generator(1_000_003 * self.seed + ARMS.index(self.arm), batch.input_ids.device)
        T = batch.answers.shape[1]
        if self.arm == "ss":
            y_hat = teacher_forced_predictions(model, batch, self.allowed)
            self.cost.extra_fwd += 1
            mask = mixing_mask(batch.answer_valid, eps, self.generator, self.granularity)
            return self._mixed(batch, y_hat, mask, targets, None, eps)
        pool, pool_len = self._pool(model, step)
        rows, lens = pool[batch.idx.to(pool.device)], pool_len[batch.idx.to(pool.device)]
        if self.eos_id is not None:  # the model's EOS ends its answer: it never enters a context mid-answer
            last = rows.gather(1, (lens - 1).clamp(min=0)[:, None])[:, 0]
            lens = lens - ((last == self.eos_id) & (lens > 0)).long()
        y_hat = _fit(rows, T, self.pad_id).to(batch.answers.device)
        valid = batch.answer_valid & (torch.arange(T, device=y_hat.device)[None] < lens.to(y_hat.device)[:, None])
        if self.eos_id is not None:  # nor a teacher-forced prediction of EOS before the reference ends
            valid &= y_hat != self.eos_id
        if self.arm in ("bash", "bash_tf", "noise"):
            mask = mixing_mask(valid, eps, self.generator, self.granularity)
            if self.arm == "noise":  # the same corrupted positions, random wrong tokens instead of the own ones
                wrong = random_wrong_tokens(batch.answers, self._candidates(y_hat.device), self.generator)
                y_hat = torch.where(y_hat != batch.answers, wrong, y_hat)
            return self._mixed(batch, y_hat, mask, targets, None, eps)
        k, c = rac_cut(batch.answers, y_hat, valid, eps, self.generator)
        if self.rac_alignment == "edit":
            return self._rac_edit(batch, rows, lens, k, c, eps)
        weights = None
        if self.w_corr != 1.0:  # predictions made after an own error: answer positions k+1 .. c+1
            pos = torch.arange(T, device=k.device)[None]
            corr = (pos > k[:, None]) & (pos <= c[:, None] + 1) & (c[:, None] >= 0)
            weights = 1.0 + (self.w_corr - 1.0) * (batch.targets(corr.long()) == 1).float()
        return self._mixed(batch, y_hat, rac_mask(c, T) & valid, targets, weights, eps,
                           {"rac_frac": (c >= 0).float().mean()})

    def _candidates(self, device) -> torch.Tensor:
        """The tokens `noise` draws from: the allowed answer tokens, or the vocabulary without pad and EOS (listed
        where `allowed` lives, the CPU by default, then moved: the list's length depends on values)."""
        if self.allowed is not None:
            return self.allowed.nonzero()[:, 0].to(device)
        ids = torch.arange(self.vocab_size)
        return ids[(ids != self.pad_id) & (ids != (-1 if self.eos_id is None else self.eos_id))].to(device)

    def _mixed(self, batch, y_hat, mask, targets, weights, eps, logs=None):
        inputs = batch.with_answers(y_hat, mask)
        n = (inputs != batch.input_ids).sum()
        self.cost.mixed_tokens = self.cost.mixed_tokens + n.detach()  # a device tensor: no sync per step
        logs = {"eps": eps, "own_token_frac": n / batch.answer_valid.sum(), **(logs or {})}
        return inputs, batch.attention_mask, targets, weights, logs

    def _rac_edit(self, batch, pool_rows, pool_len, k, c, eps):
        rows = []
        for i in range(batch.answers.shape[0]):
            p = batch.input_ids[i, : batch.ans_start[i]].tolist()
            y = batch.answers[i, : batch.ans_len[i]].tolist()
            if c[i] < 0:
                rows.append((p, y, y))
                continue
            u, t = rac_edit_example(y, pool_rows[i, : pool_len[i]].tolist(), int(k[i]), int(c[i]))
            rows.append((p, u, t))
        edited = collate([{"prompt": p, "answer": u} for p, u, _ in rows], self.pad_id).to(batch.input_ids.device)
        tgt = torch.full_like(edited.answers, IGNORE_INDEX)
        for i, (_, _, t) in enumerate(rows):
            tgt[i, : len(t)] = torch.tensor(t, device=tgt.device)
        logs = {"eps": eps, "rac_frac": (c >= 0).float().mean()}
        return edited.input_ids, edited.attention_mask, edited.targets(tgt), None, logs

    def __call__(self, model, batch: Batch, step: int):
        inputs, attention, targets, weights, logs = self.build(model, batch, step)
        loss = reference_loss(model, inputs, attention, targets, weights)
        return loss, {"loss": loss.detach(), **logs}


def _fit(x: torch.Tensor, T: int, pad: int) -> torch.Tensor:
    """`x` [B, W] cut or right-padded with `pad` to width T."""
    return F.pad(x, (0, T - x.shape[1]), value=pad)
