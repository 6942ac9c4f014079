r"""Warmup Generations (Li et al., ACL 2025, arXiv 2502.12304): a self-generated, unsupervised warmup c before y.

The paper treats the warmup as a latent variable, P(y|x) = sum_c P(y|x,c) P(c|x), and approximates the sum by
Monte Carlo with warmups sampled from the model itself [verified]. The exact loss could not be read; this module
implements our reconstruction (notebook 01, "What is the paper's and what is ours"), the standard estimator that
matches every verified statement. For one example with K warmups c_k ~ P(c|x) sampled from x only,

    a_k = log P(c_k | x)            (warmup tokens, incl. a scored `</w>`)
    b_k = log P(y | x, c_k)         (target tokens incl. EOS)
    w_k = softmax_k(b_k / beta)     (the normalised "reward", per example, detached)
    L   = - sum_k sg(w_k) [lam a_k + b_k] / norm

Variants (all ours): `hard` (w = one-hot of the best warmup, V1), `baseline` (sg(w_k - 1/K) on the warmup
term, V2), `uniform` (w = 1/K: the control without reward weighting). Sequence formats (the separators are ours;
the paper does not give them):

    decoder-only     prompt(x) <w> c_1..c_M </w> y_1..y_T <eos>         loss on c, </w>, y, <eos>; none on the prompt
    encoder-decoder  encoder: x;  decoder: [start] c_1..c_M </w> y_1..y_T <eos>   (the start token plays <w>)
    SFT (c absent)   prompt(x) <w> y <eos>   /   encoder x, decoder [start] y <eos>

`decode` samples or greedily decodes warmups and answers in one KV-cached loop; `WarmupStep` is the training step
for `seqnb.train.train`; `select_by_joint_score` is the optional test-time best-of-K (no reference used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from seqnb.collate import pad_sequences
from seqnb.decoding import DecodeStep, decode_tokens, forced_prefixes, sampler
from seqnb.runtime import check_generator, generator_state, model_device, restore_generator, seeded_generator

# the role of each token in an assembled sequence: what the loss does with it
PROMPT, WARMUP, CLOSE, ANSWER, EOS = 0, 1, 2, 3, 4
ROLE_NAMES = {PROMPT: "prompt, no loss", WARMUP: "warmup, in a = log P(c|x)", CLOSE: "appended, not scored",
              ANSWER: "target, in b = log P(y|x,c)", EOS: "end of target, in b"}


@dataclass(frozen=True)
class WarmupFormat:
    """Special-token ids and the format choices of one model.

    `warmup_tokens` / `answer_tokens`: the tokens warmup / answer positions may take (sampled and scored over
    that set only, plus `</w>` / EOS; None = the whole vocabulary). `fixed_length`: warmups are exactly `L_w` tokens
    and `</w>` is
    appended deterministically and not scored; otherwise a warmup ends when the model emits `</w>` (scored, part
    of a) or is closed by force at `L_w` (the forced `</w>` is scored too, so the policy learns to close).
    """

    seq2seq: bool
    open_id: int
    close_id: int
    eos_id: int
    pad_id: int
    decoder_start_id: int | None = None
    warmup_tokens: tuple[int, ...] | None = None
    answer_tokens: tuple[int, ...] | None = None
    fixed_length: bool = False

    def __post_init__(self):
        if self.seq2seq and self.decoder_start_id is None:
            raise ValueError("parameter 'decoder_start_id': an encoder-decoder format needs the decoder start id")

    def warmup_set(self) -> tuple[int, ...] | None:
        if self.warmup_tokens is None:
            return None
        return self.warmup_tokens if self.fixed_length else (*self.warmup_tokens, self.close_id)

    def answer_set(self) -> tuple[int, ...] | None:
        return None if self.answer_tokens is None else (*self.answer_tokens, self.eos_id)


@dataclass
class Joint:
    """One assembled training sequence. Decoder-only: `tokens` is the whole sequence and `roles[t]` says what the
    loss does with `tokens[t]` (predicted from position t-1). Encoder-decoder: `encoder_ids` is x, `tokens` the
    decoder's targets, `roles` aligned with them; the decoder input is [start] + tokens[:-1]."""

    tokens: list[int]
    roles: list[int]
    encoder_ids: list[int] | None = None


def assemble(fmt: WarmupFormat, prompt: Sequence[int], warmup: Sequence[int] | None, target: Sequence[int]) -> Joint:
    """The sequence for (x, c, y); `warmup=None` gives the SFT format (no warmup, no `</w>`). `target` excludes
    EOS; `warmup` excludes `</w>`."""
    prompt, target = list(prompt), list(target)
    close_role = CLOSE if fmt.fixed_length else WARMUP
    mid, mid_roles = [], []
    if warmup is not None:
        mid = [*warmup, fmt.close_id]
        mid_roles = [WARMUP] * len(warmup) + [close_role]
    tail = [*target, fmt.eos_id]
    tail_roles = [ANSWER] * len(target) + [EOS]
    if fmt.seq2seq:
        return Joint(mid + tail, mid_roles + tail_roles, encoder_ids=prompt)
    head = prompt + [fmt.open_id]
    return Joint(head + mid + tail, [PROMPT] * len(head) + mid_roles + tail_roles)


def _restricted_logprob(logits: torch.Tensor, tokens: torch.Tensor, allowed: tuple[int, ...] | None) -> torch.Tensor:
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    pool = logits if allowed is None else logits[..., list(allowed)]
    return picked - torch.logsumexp(pool, dim=-1)


def score(model, fmt: WarmupFormat, rows: list[Joint]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One teacher-forced pass over `rows`: a = log P(c|x) and b = log P(y|x,c) per row (shape [N] each, with
    gradients), summed over tokens from our own gather over log-softmax (never the model's mean loss); returns
    also the number of tokens the pass processed."""
    device = model_device(model)
    roles = pad_sequences([r.roles for r in rows], PROMPT, device)
    if fmt.seq2seq:
        enc, enc_mask = pad_sequences([r.encoder_ids for r in rows], fmt.pad_id, device, mask=True)
        dec_in, dec_mask = pad_sequences([[fmt.decoder_start_id, *r.tokens[:-1]] for r in rows], fmt.pad_id, device,
                                         mask=True)
        logits = model(input_ids=enc, attention_mask=enc_mask, decoder_input_ids=dec_in,
                       decoder_attention_mask=dec_mask).logits.float()
        tokens = pad_sequences([r.tokens for r in rows], fmt.pad_id, device)
        n_tokens = sum(len(r.encoder_ids) + len(r.tokens) for r in rows)
    else:
        ids, mask = pad_sequences([r.tokens for r in rows], fmt.pad_id, device, mask=True)
        # logits only from the shortest prompt on (a long prompt has no loss; the LM head over it would cost
        # width x vocabulary floats per position for nothing)
        first = min(next(i for i, role in enumerate(r.roles) if role != PROMPT) for r in rows)
        keep = ids.shape[1] - first + 1  # positions first-1 .. T-1 predict tokens first .. T (the last is unused)
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits[:, :-1].float()
        tokens, roles = ids[:, first:], roles[:, first:]
        n_tokens = sum(len(r.tokens) for r in rows)
    lp_w = _restricted_logprob(logits, tokens, fmt.warmup_set())
    same = fmt.answer_set() == fmt.warmup_set()  # one log-softmax serves both when the pools are the same
    lp_y = lp_w if same else _restricted_logprob(logits, tokens, fmt.answer_set())
    a = (lp_w * (roles == WARMUP)).sum(-1)
    b = (lp_y * ((roles == ANSWER) | (roles == EOS))).sum(-1)
    return a, b, n_tokens


@dataclass
class ObjectiveOut:
    loss: torch.Tensor
    weights: torch.Tensor  # [B, K], detached
    mc_nll: torch.Tensor  # [B]: -(logsumexp_k b_k - log K), the MC estimate of -log P(y|x) (pessimistic)
    weight_entropy: torch.Tensor  # [B]: entropy of w / log K (1 = uniform, 0 = one-hot); 0 when K = 1


def warmup_objective(a: torch.Tensor, b: torch.Tensor, k: int, *, beta: float = 1.0, lam: float = 1.0,
                     weights: str = "soft", norm: torch.Tensor | float = 1.0) -> ObjectiveOut:
    """The loss of the module docstring. `a`, `b`: shape [B*K], example-major (rows i*K .. i*K+K-1 belong to
    example i). `norm`: per-example divisor ([B] or a number)."""
    if k < 1 or a.shape != b.shape or a.numel() % k:
        raise ValueError(f"parameter 'k': a and b must both hold B*K values, got {tuple(a.shape)}, "
                         f"{tuple(b.shape)} with k={k}")
    if beta <= 0:
        raise ValueError(f"parameter 'beta': the weight temperature must be > 0, got {beta}")
    if weights not in ("soft", "hard", "baseline", "uniform"):
        raise ValueError(f"parameter 'weights': unknown {weights!r}, use 'soft', 'hard', 'baseline' or 'uniform'")
    # a_k = log P(c_k | x), b_k = log P(y | x, c_k): [B, K]
    A, B = a.view(-1, k), b.view(-1, k)
    bd = B.detach()
    # w_k = softmax_k(sg(b_k) / beta): how much warmup k raises P(y | x), normalised over the K samples
    w = torch.softmax(bd / beta, dim=1)
    if weights == "hard":  # V1: all weight on the best warmup
        w = torch.nn.functional.one_hot(bd.argmax(1), k).to(bd.dtype)
    if weights == "uniform":  # control: every sample counts 1/K, whatever its reward
        w = torch.full_like(w, 1.0 / k)
    w_a = w - 1.0 / k if weights == "baseline" else w  # V2: sg(w_k - 1/K) on the warmup term
    # L = - sum_k sg(w_k) [lam a_k + b_k] / norm
    per_example = -(lam * w_a * A + w * B).sum(1) / norm
    entropy = -(w * torch.log(w.clamp_min(1e-30))).sum(1) / math.log(k) if k > 1 else torch.zeros_like(bd[:, 0])
    # the Monte Carlo estimate - log (1/K) sum_k P(y | x, c_k), c_k ~ P(c | x)
    return ObjectiveOut(loss=per_example.mean(), weights=w,
                        mc_nll=-(torch.logsumexp(bd, 1) - math.log(k)), weight_entropy=entropy)


@dataclass
class Decoded:
    warmups: list[list[int]]  # without `</w>`; empty lists when decoded without warmup
    answers: list[list[int]]  # without EOS
    closed: list[bool]  # the model emitted `</w>` itself (False: forced at L_w, or fixed-length)
    n_tokens: int  # tokens processed (prompt tokens once, then one per active row per step)


def _vocab_mask(allowed: tuple[int, ...] | None, size: int, device) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool, device=device)
    mask[list(allowed) if allowed is not None else slice(None)] = True
    return mask


class _WarmupThenAnswer:
    """Each row's phase in `decode` (0 warmup, 1 answer, 2 done): the phase's allowed tokens and chooser for
    `seqnb.decoding.decode_tokens`, and its edit hook, which closes a warmup at `max_warmup_len`, ends an answer
    at `max_answer_len`, puts in the given warmups, moves rows on and records what they wrote."""

    def __init__(self, model, fmt: WarmupFormat, n: int, *, with_warmup: bool, max_warmup_len: int,
                 max_answer_len: int, warmup_temperature: float, answer_temperature: float, generator,
                 forced_warmups: Sequence[Sequence[int]] | None, stop_after_warmup: bool):
        device = model_device(model)
        vocab = model.get_output_embeddings().weight.shape[0]
        self.warm_mask = _vocab_mask(fmt.warmup_set(), vocab, device)
        if fmt.warmup_tokens is None and fmt.fixed_length:
            self.warm_mask[fmt.close_id] = False
        self.ans_mask = _vocab_mask(fmt.answer_set(), vocab, device)
        self.choose_warmup = sampler(warmup_temperature, generator)
        self.choose_answer = sampler(answer_temperature, generator)
        self.forced = forced_warmups is not None
        self.force = (forced_prefixes([[*c, fmt.close_id] for c in forced_warmups], device)
                      if self.forced and with_warmup else None)
        self.fmt, self.max_warmup_len, self.max_answer_len = fmt, max_warmup_len, max_answer_len
        self.stop_after_warmup = stop_after_warmup
        self.phase = torch.full((n,), 0 if with_warmup else 1, device=device)
        self.count = torch.zeros(n, dtype=torch.long, device=device)  # tokens written in the current phase
        self.warmups, self.answers = [[] for _ in range(n)], [[] for _ in range(n)]
        self.closed = [False] * n
        self.n_tokens = 0  # one per unfinished row and step

    def allowed(self) -> torch.Tensor:
        return torch.where((self.phase == 0)[:, None], self.warm_mask, self.ans_mask)

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        # both choosers run on every row (warmup first), so the draws do not depend on the phases
        return torch.where(self.phase == 0, self.choose_warmup(logits), self.choose_answer(logits))

    def edit(self, step: DecodeStep) -> None:
        fmt = self.fmt
        in_warm, in_ans = self.phase == 0, self.phase == 1
        step.tokens = torch.where(in_warm & (self.count >= self.max_warmup_len), fmt.close_id, step.tokens)
        step.tokens = torch.where(in_ans & (self.count >= self.max_answer_len), fmt.eos_id, step.tokens)
        if self.force is not None:
            self.force(step)
        nxt = step.tokens
        self.n_tokens += int((self.phase < 2).sum())
        for i, (t, p, c) in enumerate(zip(nxt.tolist(), self.phase.tolist(), self.count.tolist())):
            if p == 0:
                if t == fmt.close_id:
                    self.closed[i] = not fmt.fixed_length and not self.forced and c < self.max_warmup_len
                else:
                    self.warmups[i].append(t)
            elif p == 1 and t != fmt.eos_id:
                self.answers[i].append(t)
        to_answer = in_warm & (nxt == fmt.close_id)
        done = (in_ans & (nxt == fmt.eos_id)) | (to_answer & self.stop_after_warmup)
        self.phase = torch.where(done, 2, torch.where(to_answer, 1, self.phase))
        self.count = torch.where(to_answer, 0, self.count + 1)
        step.finished = step.finished | done


def decode(model, fmt: WarmupFormat, prompts: Sequence[Sequence[int]], *, max_warmup_len: int,
           max_answer_len: int, with_warmup: bool = True, warmup_temperature: float = 0.0,
           answer_temperature: float = 0.0, generator: torch.Generator | None = None,
           forced_warmups: Sequence[Sequence[int]] | None = None, stop_after_warmup: bool = False) -> Decoded:
    """Warmup then answer, in one KV-cached loop (greedy at temperature 0, else ancestral sampling with no top-k/
    top-p). Warmups come from x only. A warmup that reaches `max_warmup_len` is closed with `</w>`; an answer
    that reaches `max_answer_len` is cut (EOS forced). `forced_warmups` replaces the model's warmups (e.g. another
    input's warmup); `with_warmup=False` decodes the SFT format; `stop_after_warmup` returns after `</w>`.
    Decoder-only, the model reads prompt(x) <w>; encoder-decoder, the encoder reads x and the decoder starts
    from the start token (which plays <w>)."""
    if max_warmup_len < 1 or max_answer_len < 1:
        raise ValueError("parameters 'max_warmup_len' and 'max_answer_len' must be >= 1")
    if forced_warmups is not None and len(forced_warmups) != len(prompts):
        raise ValueError("parameter 'forced_warmups': one warmup per prompt")
    check_generator(generator, model_device(model))
    phases = _WarmupThenAnswer(
        model, fmt, len(prompts), with_warmup=with_warmup, max_warmup_len=max_warmup_len,
        max_answer_len=max_answer_len, warmup_temperature=warmup_temperature, answer_temperature=answer_temperature,
        generator=generator, forced_warmups=forced_warmups, stop_after_warmup=stop_after_warmup)
    heads = [list(p) for p in prompts] if fmt.seq2seq else [[*p, fmt.open_id] for p in prompts]
    # every row is done by then: a warmup and its </w>, an answer and its EOS
    warmup_steps = max([max_warmup_len, *map(len, forced_warmups or [])]) + 1 if with_warmup else 0
    decode_tokens(model, heads, max_new_tokens=warmup_steps + max_answer_len + 1, pad_id=fmt.pad_id,
                  choose=phases.choose, allowed=phases.allowed, edit=phases.edit,
                  decoder_start_id=fmt.decoder_start_id)
    prompt_tokens = sum(map(len, heads)) + (len(heads) if fmt.seq2seq else 0)  # seq2seq: and the start tokens
    return Decoded(phases.warmups, phases.answers, phases.closed, prompt_tokens + phases.n_tokens)


@dataclass
class StepCost:
    """Accumulated cost of a training arm: tokens through the model (sampling + scoring passes) and rows."""

    tokens: int = 0
    sampled_tokens: int = 0
    sequences: int = 0


def unbatch(batch: dict) -> tuple[list[list[int]], list[list[int]]]:
    """Back from the padded tensors of `collate_pairs` to lists of prompt and target ids."""
    p, pl, t, tl = (batch[k].tolist() for k in ("prompt_ids", "prompt_len", "target_ids", "target_len"))
    return [r[:n] for r, n in zip(p, pl)], [r[:n] for r, n in zip(t, tl)]


def collate_pairs(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Rows {prompt_ids, target_ids} (target without EOS) to right-padded tensors with their lengths."""
    out = {}
    for key in ("prompt_ids", "target_ids"):
        out[key] = pad_sequences([r[key] for r in rows], 0)
        out[key.replace("_ids", "_len")] = torch.tensor([len(r[key]) for r in rows], dtype=torch.long)
    return out


@dataclass
class WarmupStep:
    """The Warmup Generations training step for `seqnb.train.train` (step_fn(model, batch, step) -> (loss, logs)).

    1. sample K warmups per input from the current model (eval mode, no gradient, pure ancestral sampling at
       `temperature`, from x only; the generator is seeded with `seed` on the model's device at the first call);
    2. one teacher-forced pass over the B*K sequences (x, c_k, y) gives a_k and b_k;
    3. `warmup_objective`. `diagnose(prompts, warmups, targets) -> dict` adds task-specific logs.
    `state_dict` holds the generator's state, so a resumed run samples the same warmups as an uninterrupted one.

    Example::

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from seqnb.models import add_special_tokens
        from seqnb.papers.warmup_generations.method import WarmupFormat, WarmupStep, collate_pairs

        model = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M", dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M")
        open_id, close_id = add_special_tokens(model, tokenizer, ["<w>", "</w>"])  # x <w> warmup </w> y <eos>
        eos = tokenizer.eos_token_id
        fmt = WarmupFormat(seq2seq=False, open_id=open_id, close_id=close_id, eos_id=eos, pad_id=eos)
        step = WarmupStep(fmt, k=2, max_warmup_len=8)  # K = 2 warmups per input, sampled from the model
        pairs = [("Translate to French: the cat", " le chat"), ("Translate to French: the dog", " le chien")]
        batch = collate_pairs([{"prompt_ids": tokenizer(x).input_ids, "target_ids": tokenizer(y).input_ids}
                               for x, y in pairs])
        loss, logs = step(model, batch, 0)
        loss.backward()
    """

    fmt: WarmupFormat
    k: int
    max_warmup_len: int
    temperature: float = 1.0
    beta: float = 1.0
    lam: float = 1.0
    weights: str = "soft"
    loss_norm: str = "target"
    seed: int = 0
    diagnose: Callable[[list, list, list], dict] | None = None
    cost: StepCost = field(default_factory=StepCost)
    last: dict = field(default_factory=dict)  # the last step's prompts, warmups, a, b, w (for inspection)
    generator: torch.Generator | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"parameter 'n_warmups': must be >= 1, got {self.k}")
        if self.loss_norm not in ("target", "joint"):
            raise ValueError(f"parameter 'loss_norm': unknown {self.loss_norm!r}, use 'target' or 'joint'")

    def state_dict(self) -> dict:
        return {"generator": generator_state(self.generator)}

    def load_state_dict(self, state: dict) -> None:
        self.generator = restore_generator(state["generator"])

    def sample(self, model, prompts: list[list[int]]) -> Decoded:
        if self.generator is None:
            self.generator = seeded_generator(self.seed, model_device(model))
        repeated = [p for p in prompts for _ in range(self.k)]
        return decode(model, self.fmt, repeated, max_warmup_len=self.max_warmup_len, max_answer_len=1,
                      warmup_temperature=self.temperature, generator=self.generator, stop_after_warmup=True)

    def __call__(self, model, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        prompts, targets = unbatch(batch)
        was_training = model.training
        sampled = self.sample(model, prompts)
        model.train(was_training)
        self.cost.tokens += sampled.n_tokens
        self.cost.sampled_tokens += sampled.n_tokens
        loss, logs = self.loss(model, prompts, targets, sampled.warmups)
        lengths = torch.tensor([len(c) for c in sampled.warmups], dtype=torch.float).view(-1, self.k)
        distinct = sum(len({tuple(c) for c in sampled.warmups[i * self.k:(i + 1) * self.k]})
                       for i in range(len(prompts))) / (len(prompts) * self.k)
        logs.update(warmup_len=lengths.mean(), distinct_warmups=distinct)
        if self.diagnose is not None:
            logs.update(self.diagnose(prompts, sampled.warmups, targets))
        return loss, logs

    def loss(self, model, prompts: list[list[int]], targets: list[list[int]],
             warmups: list[list[int]]) -> tuple[torch.Tensor, dict]:
        """Steps 2-3 for given warmups (K per prompt, example-major): the part that computes, reading no value."""
        rows = [assemble(self.fmt, prompts[j // self.k], c, targets[j // self.k]) for j, c in enumerate(warmups)]
        a, b, n_scored = score(model, self.fmt, rows)
        len_y = torch.tensor([len(t) + 1 for t in targets], dtype=a.dtype, device=a.device)
        norm = len_y
        if self.loss_norm == "joint":
            len_c = torch.tensor([sum(r == WARMUP for r in row.roles) for row in rows], dtype=a.dtype,
                                 device=a.device).view(-1, self.k).mean(1)
            norm = len_y + len_c
        out = warmup_objective(a, b, self.k, beta=self.beta, lam=self.lam, weights=self.weights, norm=norm)
        self.cost.tokens += n_scored
        self.cost.sequences += len(rows)
        self.last = dict(prompts=prompts, targets=targets, warmups=warmups, a=a.detach().view(-1, self.k),
                         b=b.detach().view(-1, self.k), w=out.weights)
        return out.loss, {"loss": out.loss.detach(), "mc_nll": (out.mc_nll / len_y).mean(),
                          "weight_entropy": out.weight_entropy.mean(), "warmup_logp": a.detach().mean()}


@dataclass
class FixedWarmupStep:
    """Teacher forcing with a warmup chosen by a rule instead of sampled: `warmup_fn(prompt) -> c`, or None for
    the SFT format (no warmup). `train_warmup`: the warmup tokens are supervised too (an oracle scratchpad);
    otherwise only y is (SFT, or a pause-token control)."""

    fmt: WarmupFormat
    warmup_fn: Callable[[list[int]], list[int]] | None = None
    train_warmup: bool = False
    cost: StepCost = field(default_factory=StepCost)

    def __call__(self, model, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        return self.loss(model, *unbatch(batch))

    def loss(self, model, prompts: list[list[int]], targets: list[list[int]]) -> tuple[torch.Tensor, dict]:
        """The step for given prompts and targets: the part that computes, reading no value."""
        rows = [assemble(self.fmt, p, None if self.warmup_fn is None else self.warmup_fn(p), t)
                for p, t in zip(prompts, targets)]
        a, b, n_scored = score(model, self.fmt, rows)
        norm = torch.tensor([len(t) + 1 + (sum(r == WARMUP for r in row.roles) if self.train_warmup else 0)
                             for t, row in zip(targets, rows)], dtype=a.dtype, device=a.device)
        loss = (-(b + (a if self.train_warmup else 0.0)) / norm).mean()
        self.cost.tokens += n_scored
        self.cost.sequences += len(rows)
        len_y = torch.tensor([len(t) + 1 for t in targets], dtype=b.dtype, device=b.device)
        return loss, {"loss": loss.detach(), "nll_y": (-b / len_y).mean()}


@dataclass
class Selection:
    answers: list[list[int]]  # the chosen answer per prompt
    chosen: list[int]  # index of the chosen candidate
    candidates: list[list[tuple[list[int], list[int]]]]  # per prompt: (warmup, answer) for each of K_test
    scores: torch.Tensor  # [N, K_test]: log P(c, y | x) / (|c| + |y|) of each candidate


@torch.no_grad()
def select_by_joint_score(model, fmt: WarmupFormat, prompts: Sequence[Sequence[int]], *, k: int,
                          max_warmup_len: int, max_answer_len: int, temperature: float = 1.0,
                          generator: torch.Generator | None = None) -> Selection:
    """Optional test-time selection (our choice, not the paper's): sample k warmups per input, decode y greedily
    after each, return the y whose candidate has the highest length-normalised joint score log P(c,y|x)/(|c|+|y|).
    The reference is never used (it does not exist at test time)."""
    if k < 1:
        raise ValueError(f"parameter 'k': must be >= 1, got {k}")
    repeated = [list(p) for p in prompts for _ in range(k)]
    drawn = decode(model, fmt, repeated, max_warmup_len=max_warmup_len, max_answer_len=1,
                   warmup_temperature=temperature, generator=generator, stop_after_warmup=True)
    answered = decode(model, fmt, repeated, max_warmup_len=max_warmup_len, max_answer_len=max_answer_len,
                      forced_warmups=drawn.warmups)
    rows = [assemble(fmt, p, c, y) for p, c, y in zip(repeated, drawn.warmups, answered.answers)]
    a, b, _ = score(model, fmt, rows)
    lengths = torch.tensor([sum(r in (WARMUP, ANSWER, EOS) for r in row.roles) for row in rows],
                           dtype=a.dtype, device=a.device)
    scores = ((a + b) / lengths).view(-1, k).cpu()
    chosen = scores.argmax(1).tolist()
    cands = [[(drawn.warmups[i * k + j], answered.answers[i * k + j]) for j in range(k)] for i in range(len(prompts))]
    return Selection([cands[i][j][1] for i, j in enumerate(chosen)], chosen, cands, scores)
