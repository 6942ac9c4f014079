"""Decoding: batched text continuation with transformers' `generate`, and one KV-cached token loop for decoders
that need a hand on every step.

`generate` continues text prompts (greedy or sampled, decoder-only or seq2seq). `decode_tokens` is the loop the
paper decoders are built on (warmup then answer, `<bksp>` editing, greedy answers under a restricted vocabulary):

    read the prompts -> [ last logits -> disallowed tokens to -inf -> chooser -> edit hook -> EOS -> read the new
    tokens ] until every row has finished or `max_new_tokens` are written

A chooser maps logits [rows, V] to tokens [rows]: `greedy`, or `sampler(temperature, generator)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from .collate import pad_sequences
from .runtime import model_device

Chooser = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    batch_size: int = 256,
    seed: int | None = None,
    skip_special_tokens: bool = True,
) -> list[str]:
    """Continue each prompt; returns only the new text. Decoder-only prompts are left-padded so every row's
    continuation starts at the same position. `seed` makes sampling reproducible."""
    if max_new_tokens < 1:
        raise ValueError(f"parameter 'max_new_tokens': must be >= 1, got {max_new_tokens}")
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature if do_sample else None,
        top_k=top_k if do_sample else None, top_p=top_p if do_sample else None, use_cache=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    was_training = model.training
    model.eval()
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    seq2seq = model.config.is_encoder_decoder
    device = model_device(model)
    out: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(
                prompts[i : i + batch_size], return_tensors="pt", padding=True,
                padding_side="right" if seq2seq else "left",
            ).to(device)
            ids = model.generate(**enc, generation_config=config)
            new = ids if seq2seq else ids[:, enc["input_ids"].shape[1] :]
            out += tokenizer.batch_decode(new, skip_special_tokens=skip_special_tokens)
    finally:
        if seed is not None:
            torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return out


# ------------------------------------------------------------------------------------------------ choosers
def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The most likely token of each row."""
    return logits.argmax(-1)


def sampler(temperature: float, generator: torch.Generator | None = None) -> Chooser:
    """Ancestral sampling (no top-k / top-p) at `temperature`, drawing from `generator`; greedy at 0."""
    if temperature < 0:
        raise ValueError(f"parameter 'temperature': must be >= 0, got {temperature}")
    if temperature == 0:
        return greedy

    def sample(logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    return sample


def restrict(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """`logits` with every token outside `allowed` (bool [V], or one row per logits row) at -inf."""
    if allowed is None:
        return logits
    return logits.masked_fill(~allowed.to(logits.device), float("-inf"))


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class DecodeStep:
    """What an edit hook sees at one step; it may replace `tokens` and set more rows `finished`."""

    index: int  # 0 for the first new token
    tokens: torch.Tensor  # [N] this step's tokens (pad_id in rows finished before): what is written and read next
    finished: torch.Tensor  # [N] bool, the rows finished before this step; a row set here ends after this token


@dataclass
class Decoding:
    tokens: torch.Tensor  # [N, max_new_tokens] the new tokens, pad_id after each row's end
    lengths: torch.Tensor  # [N] new tokens per row, the one that finished it (e.g. EOS) included
    finished: torch.Tensor  # [N] bool: ended by EOS or the edit hook (False: cut at max_new_tokens)


def forced_prefixes(prefixes: Sequence[Sequence[int]], device) -> Callable[[DecodeStep], None]:
    """An edit hook that makes row i's first new tokens `prefixes[i]` (e.g. injected errors, a given warmup)."""
    forced = pad_sequences(prefixes, -1, device)  # -1: the steps after a row's prefix

    def edit(step: DecodeStep) -> None:
        if step.index < forced.shape[1]:
            column = forced[:, step.index]
            step.tokens = torch.where((column >= 0) & ~step.finished, column, step.tokens)

    return edit


@torch.no_grad()
def decode_tokens(
    model, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, pad_id: int, choose: Chooser = greedy,
    allowed: torch.Tensor | Callable[[], torch.Tensor] | None = None, edit: Callable[[DecodeStep], None] | None = None,
    eos_id: int | None = None, decoder_start_id: int | None = None, delete_id: int | None = None,
) -> Decoding:
    """Continue token-id prompts, one token per row and step, in eval mode without gradient, through the KV cache.

    Decoder-only prompts are left-padded, so one new column per step serves every row (positions count from
    each row's first real token); an encoder-decoder reads the prompts with its encoder once and its decoder
    starts from `decoder_start_id` (the model config's by default). Each step the last logits go through
    `allowed` (bool [V], or [N, V]; or a callable giving it at each step) and `choose`, then `edit` may replace
    the tokens or finish rows; a row also finishes at `eos_id`. Finished rows are fed `pad_id` until every row
    is done.

    `delete_id` (decoder-only): a token that deletes the row's last new token (never a prompt token), such as
    SequenceMatch's `<bksp>`. The model then reads the edited sequence: the cache keeps every column, the
    deleted token's column is masked out, and the token before it is read again at its own position (its old
    column masked too), which gives exactly the next-token logits of the edited sequence read from scratch.
    """
    if max_new_tokens < 1:
        raise ValueError(f"parameter 'max_new_tokens': must be >= 1, got {max_new_tokens}")
    seq2seq = getattr(getattr(model, "config", None), "is_encoder_decoder", False)  # a config is optional
    if delete_id is not None and seq2seq:
        raise ValueError("parameter 'delete_id': deleting through the cache needs a decoder-only model")
    was_training = model.training
    model.eval()
    device = model_device(model)
    n = len(prompts)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    lengths = torch.full((n,), max_new_tokens, device=device)
    written = torch.full((n, max_new_tokens), pad_id, device=device)

    # read the prompts: the first model call, before any value is read (meta-device runs get this far)
    if seq2seq:
        enc_ids, enc_mask = pad_sequences(prompts, pad_id, device, mask=True)
        encoded = model.get_encoder()(input_ids=enc_ids, attention_mask=enc_mask)
        start = torch.full((n, 1), model.config.decoder_start_token_id if decoder_start_id is None
                           else decoder_start_id, device=device)
        out = model(encoder_outputs=encoded, attention_mask=enc_mask, decoder_input_ids=start, use_cache=True)
    else:
        ids, mask = pad_sequences(prompts, pad_id, device, side="left", mask=True)
        positions = (mask.cumsum(1) - 1).clamp_min(0)  # a pad's position is 0, and it is never attended
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        prompt_end = position = positions[:, -1]  # [N] the position of each row's last prompt / read token

    for index in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        # choose among the allowed tokens
        chosen = choose(restrict(logits, allowed() if callable(allowed) else allowed))
        tokens = torch.where(finished, pad_id, chosen)  # finished rows are fed pad
        # the edit hook may replace tokens and finish rows; then EOS finishes a row
        step = DecodeStep(index, tokens, finished.clone())
        if edit is not None:
            edit(step)
        ended = step.finished & ~finished
        if eos_id is not None:
            ended |= (step.tokens == eos_id) & ~finished
        lengths = torch.where(ended, index + 1, lengths)
        deleting = None if delete_id is None else (step.tokens == delete_id) & ~finished
        finished = finished | ended
        written[:, index] = step.tokens
        if index + 1 == max_new_tokens or bool(finished.all()):
            break

        # read the new tokens: one new column, its mask and positions (the decoder's cache gives seq2seq's)
        if seq2seq:
            out = model(encoder_outputs=encoded, attention_mask=enc_mask, decoder_input_ids=step.tokens[:, None],
                        past_key_values=out.past_key_values, use_cache=True)
            continue
        column, position = step.tokens, position + 1
        if deleting is not None and bool(deleting.any()):
            column, position = _delete_last(column, ids, mask, position, deleting, prompt_end)
        if delete_id is not None:  # a delete reads an earlier token again: keep what each column holds
            ids = torch.cat([ids, column[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(input_ids=column[:, None], attention_mask=mask, position_ids=position[:, None],
                    past_key_values=out.past_key_values, use_cache=True)
    model.train(was_training)
    return Decoding(written, lengths, finished)


def _delete_last(tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, position: torch.Tensor,
                 deleting: torch.Tensor, prompt_end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The column to read next and its positions, given this step's `tokens` and their `position`s, when the
    `deleting` rows delete: mask out (in place) the column of the row's last new token (if it has one beyond
    its last prompt position `prompt_end`), then the column of the token before it, which is read again."""
    rows = torch.arange(len(ids), device=ids.device)
    columns = torch.arange(ids.shape[1], device=ids.device)
    last = (mask * columns).argmax(1)  # each row's last column the model still reads
    drop = deleting & (position - 1 > prompt_end)  # a new token to delete (else the delete is a no-op)
    mask[rows[drop], last[drop]] = 0
    last = (mask * columns).argmax(1)
    mask[rows[deleting], last[deleting]] = 0  # the token before the deleted one moves to the new column
    return torch.where(deleting, ids[rows, last], tokens), torch.where(deleting, position - 1 - drop.long(), position)
