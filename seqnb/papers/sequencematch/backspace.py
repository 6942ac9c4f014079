"""The `<bksp>` action (SequenceMatch, Cundy & Ermon 2023): editing, augmentation, parallel training inputs,
and generation that applies backspaces.

An *action sequence* is the prompt's token ids followed by the model's actions; `<bksp>` deletes the last
surviving token (never a prompt token: at the prompt boundary it is a no-op, our choice).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from seqnb.collate import pad_sequences
from seqnb.decoding import decode_tokens, forced_prefixes, sampler
from seqnb.runtime import check_generator, model_device


def apply_backspaces(actions: Sequence[int], prompt_len: int, bksp_id: int) -> list[int]:
    """The edited sequence an action sequence leaves behind."""
    edited = list(actions[:prompt_len])
    for a in actions[prompt_len:]:
        if a != bksp_id:
            edited.append(a)
        elif len(edited) > prompt_len:
            edited.pop()
    return edited


def insert_backspace_noise(
    prompt: Sequence[int], target: Sequence[int], *, p_noise: float, bksp_id: int,
    wrong_tokens: Callable[[list[int], int], Sequence[int]], rng: random.Random,
) -> tuple[list[int], list[bool]]:
    """Before each target token, with probability `p_noise`, insert a wrong token and `<bksp>`.

    `wrong_tokens(edited_so_far, gold)` lists the tokens that count as mistakes there (random noise: every
    other answer token; ground-truth-like noise: tokens invalid at that point). Returns the actions and a flag
    per action marking the inserted wrong tokens, which are never training targets.
    """
    actions, noise = list(prompt), [False] * len(prompt)
    for gold in target:
        choices = [t for t in wrong_tokens(actions, gold) if t != gold] if rng.random() < p_noise else []
        if choices:
            actions += [rng.choice(choices), bksp_id]
            noise += [True, False]
        actions.append(gold)
        noise.append(False)
    return actions, noise


def backspace_inputs(actions: Sequence[int], prompt_len: int, bksp_id: int):
    """Inputs that let ONE causal forward pass score every prefix of an action sequence as if it were edited.

    Row t must see exactly the tokens surviving after actions[:t+1]. A `<bksp>` row becomes a copy of the new
    last surviving token (same input id, same position id, same visible keys), so its hidden state, and hence
    its logits, equal that token's. Returns (input_ids [T], position_ids [T], attend [T, T] bool).
    """
    n = len(actions)
    input_ids, position_ids = [0] * n, [0] * n
    is_token, deleted_at = [False] * n, [n] * n  # a token row is a key from its own row until it is deleted
    stack: list[int] = []  # rows of surviving tokens
    for t, a in enumerate(actions):
        if a == bksp_id and t >= prompt_len:
            if len(stack) > prompt_len:
                deleted_at[stack.pop()] = t
            top = stack[-1]
            input_ids[t], position_ids[t] = input_ids[top], position_ids[top]
        else:
            input_ids[t], position_ids[t], is_token[t] = a, len(stack), True
            stack.append(t)
    rows = torch.arange(n)[:, None]  # query t
    keys = torch.arange(n)[None, :]  # key j: a surviving token at row t when j <= t < deleted_at[j]
    attend = torch.tensor(is_token)[None, :] & (keys <= rows) & (rows < torch.tensor(deleted_at)[None, :])
    return torch.tensor(input_ids), torch.tensor(position_ids), attend


def additive_mask(attend: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, T, T] bool -> the 4-D additive mask [B, 1, T, T] Hugging Face models take as given (a 2-D mask would
    be re-causalised as a padding mask, which is wrong here). Pass explicit `position_ids` with it."""
    mask = torch.zeros(attend.shape, dtype=dtype, device=attend.device)
    return mask.masked_fill(~attend, torch.finfo(dtype).min)[:, None]


@dataclass(frozen=True)
class ActionBatch:
    """Padded action sequences ready for one forward pass. `noise[b, t]` flags action t as an inserted error;
    `transition[b, t]` is True where row t (a state) is followed by action t+1 of the same sequence."""

    input_ids: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T]
    attend: torch.Tensor  # [B, T, T] bool
    actions: torch.Tensor  # [B, T] the raw actions (pad_id beyond each length)
    noise: torch.Tensor  # [B, T] bool
    transition: torch.Tensor  # [B, T] bool

    def to(self, device) -> "ActionBatch":
        return ActionBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))

    def forward(self, model) -> torch.Tensor:
        """Logits [B, T, V] of every row as if its prefix had been edited literally."""
        dtype = next(model.parameters()).dtype
        mask = additive_mask(self.attend, dtype if dtype.is_floating_point else torch.float32)
        return model(input_ids=self.input_ids, position_ids=self.position_ids, attention_mask=mask).logits


def collate_actions(rows: Sequence[dict], *, bksp_id: int, pad_id: int) -> ActionBatch:
    """rows: {"actions", "prompt_len", optional "noise"}. Padding rows attend only to themselves (no NaN)."""
    width = max(len(r["actions"]) for r in rows)
    inputs = [backspace_inputs(r["actions"], r["prompt_len"], bksp_id) for r in rows]
    attend = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1)
    transition = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (r, (_, _, row_attend)) in enumerate(zip(rows, inputs)):
        n = len(r["actions"])
        attend[i, :n, :n] = row_attend
        transition[i, r["prompt_len"] - 1 : n - 1] = True
    return ActionBatch(
        input_ids=pad_sequences([ids.tolist() for ids, _, _ in inputs], pad_id),
        position_ids=pad_sequences([pos.tolist() for _, pos, _ in inputs], 0),
        attend=attend,
        actions=pad_sequences([r["actions"] for r in rows], pad_id),
        noise=pad_sequences([r.get("noise") or [False] * len(r["actions"]) for r in rows], False).bool(),
        transition=transition,
    )


@dataclass(frozen=True)
class Trace:
    """One generation: every action taken (prompt first) and what survives the backspaces."""

    actions: list[int]
    prompt_len: int
    n_forced: int
    edited: list[int]
    ended: bool  # emitted EOS (False: stopped at max_actions)


def generate_with_backspace(
    model, prompts: Sequence[Sequence[int]], *, bksp_id: int, eos_id: int, pad_id: int, allowed: torch.Tensor,
    max_actions: int, temperature: float = 0.0, force: Sequence[Sequence[int]] | None = None,
    generator: torch.Generator | None = None,
) -> list[Trace]:
    """Batched decoding in which `<bksp>` really deletes: the model reads the edited prefixes, through the KV
    cache (`decode_tokens`'s `delete_id`). `temperature=0` is greedy; `force[i]` are actions imposed first (error
    injection); `allowed` [V] bool is the action set sampled from, the same one the SequenceMatch loss uses."""
    check_generator(generator, model_device(model))
    force = force or [[] for _ in prompts]
    out = decode_tokens(
        model, prompts, max_new_tokens=max_actions, pad_id=pad_id, choose=sampler(temperature, generator),
        allowed=allowed, edit=forced_prefixes(force, model_device(model)), eos_id=eos_id, delete_id=bksp_id,
    )
    traces = []
    for p, f, new, n, ended in zip(prompts, force, out.tokens.tolist(), out.lengths.tolist(), out.finished.tolist()):
        actions = [*p, *new[:n]]
        traces.append(Trace(actions, len(p), len(f), apply_backspaces(actions, len(p), bksp_id), ended))
    return traces
