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
    b = len(rows)
    out = dict(
        input_ids=torch.full((b, width), pad_id), position_ids=torch.zeros(b, width, dtype=torch.long),
        attend=torch.eye(width, dtype=torch.bool).repeat(b, 1, 1), actions=torch.full((b, width), pad_id),
        noise=torch.zeros(b, width, dtype=torch.bool), transition=torch.zeros(b, width, dtype=torch.bool),
    )
    for i, r in enumerate(rows):
        n, p = len(r["actions"]), r["prompt_len"]
        ids, pos, attend = backspace_inputs(r["actions"], p, bksp_id)
        out["input_ids"][i, :n], out["position_ids"][i, :n], out["attend"][i, :n, :n] = ids, pos, attend
        out["actions"][i, :n] = torch.tensor(r["actions"])
        out["noise"][i, :n] = torch.tensor(r.get("noise") or [False] * n)
        out["transition"][i, p - 1 : n - 1] = True
    return ActionBatch(**out)


@dataclass(frozen=True)
class Trace:
    """One generation: every action taken (prompt first) and what survives the backspaces."""

    actions: list[int]
    prompt_len: int
    n_forced: int
    edited: list[int]
    ended: bool  # emitted EOS (False: stopped at max_actions)


@torch.no_grad()
def generate_with_backspace(
    model, prompts: Sequence[Sequence[int]], *, bksp_id: int, eos_id: int, pad_id: int, allowed: torch.Tensor,
    max_actions: int, temperature: float = 0.0, force: Sequence[Sequence[int]] | None = None,
    generator: torch.Generator | None = None,
) -> list[Trace]:
    """Batched decoding in which `<bksp>` really deletes: each step re-reads the edited prefixes (no KV cache;
    the tiny models make that cheap). `temperature=0` is greedy; `force[i]` are actions imposed first (error
    injection); `allowed` [V] bool is the action set sampled from, the same one the SequenceMatch loss uses."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    check_generator(generator, device)
    force = force or [[] for _ in prompts]
    actions = [list(p) for p in prompts]
    edited = [list(p) for p in prompts]
    ended = [False] * len(prompts)
    for step in range(max_actions):
        active = [i for i in range(len(prompts)) if not ended[i]]
        if not active:
            break
        width = max(len(edited[i]) for i in active)
        ids = torch.full((len(active), width), pad_id, device=device)
        mask = torch.zeros(len(active), width, dtype=torch.long, device=device)
        for row, i in enumerate(active):
            ids[row, : len(edited[i])] = torch.tensor(edited[i], device=device)
            mask[row, : len(edited[i])] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = logits[torch.arange(len(active), device=device), mask.sum(1) - 1].float()
        last = last.masked_fill(~allowed.to(device), float("-inf"))
        if temperature > 0:
            probs = torch.softmax(last / temperature, dim=-1).cpu()
            chosen = torch.multinomial(probs, 1, generator=generator).squeeze(1).tolist()
        else:
            chosen = last.argmax(-1).tolist()
        for row, i in enumerate(active):
            a = force[i][step] if step < len(force[i]) else chosen[row]
            actions[i].append(a)
            if a != bksp_id:
                edited[i].append(a)
            elif len(edited[i]) > len(prompts[i]):
                edited[i].pop()
            ended[i] = a == eos_id
    model.train(was_training)
    return [
        Trace(actions[i], len(prompts[i]), len(force[i]), edited[i], ended[i]) for i in range(len(prompts))
    ]
