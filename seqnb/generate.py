"""Batched decoding with transformers' `generate` and its KV cache: greedy or sampled, decoder-only or seq2seq."""

from __future__ import annotations

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from .runtime import model_device


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
