"""Models: small transformers built from configs and trained from scratch, or pretrained ones loaded by hub id
or local folder, with a clear error when a model is not available offline."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from huggingface_hub import is_offline_mode
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    GPT2Config,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
)


class ModelNotAvailableError(RuntimeError):
    """A model is neither a local folder nor in the local Hugging Face cache."""


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> dict:
    return dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )


def build_decoder(
    tokenizer: PreTrainedTokenizerBase, *, n_layer: int, d_model: int, n_head: int, max_len: int, dropout: float = 0.0,
    init_std: float = 0.02,
) -> PreTrainedModel:
    """A GPT-2-style decoder (pre-LayerNorm, learned positions) with fresh weights, sized for `tokenizer`.

    `init_std` is the weights' initial standard deviation (GPT-2's 0.02 by default); very narrow models can sit
    on a long plateau at 0.02, where a wider start (about 1/sqrt(d_model)) breaks the symmetry of attention."""
    if d_model % n_head:
        raise ValueError(f"parameter 'd_model' ({d_model}) must be divisible by 'n_head' ({n_head})")
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=max_len, n_embd=d_model, n_layer=n_layer, n_head=n_head,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, initializer_range=init_std,
        **_special_ids(tokenizer),
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model.loss_type = "ForCausalLM"  # GPT-2 configs name no loss type; say it rather than be warned
    return model


def build_encoder_decoder(
    tokenizer: PreTrainedTokenizerBase, *, n_layer: int, d_model: int, n_head: int, dropout: float = 0.0
) -> PreTrainedModel:
    """A T5-style encoder-decoder (relative positions, so no length limit) with fresh weights."""
    if d_model % n_head:
        raise ValueError(f"parameter 'd_model' ({d_model}) must be divisible by 'n_head' ({n_head})")
    config = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // n_head, d_ff=4 * d_model, num_layers=n_layer,
        num_heads=n_head, dropout_rate=dropout, decoder_start_token_id=tokenizer.bos_token_id,
        feed_forward_proj="gelu", tie_word_embeddings=True, **_special_ids(tokenizer),
    )
    return AutoModelForSeq2SeqLM.from_config(config)


def load_pretrained(
    name_or_path: str, *, seq2seq: bool = False, param: str = "model_name", dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer by hub id or local folder. Offline, a missing model raises `ModelNotAvailableError`
    naming the notebook parameter `param` and how to provide the files."""
    path = Path(name_or_path).expanduser()
    source = str(path) if path.is_dir() else name_or_path
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    try:
        tokenizer = _cache_first(AutoTokenizer.from_pretrained, source)
        model = _cache_first(auto.from_pretrained, source, dtype=dtype)
    except OSError as e:
        if path.is_dir():
            raise
        raise ModelNotAvailableError(
            f"parameter {param!r}: model {name_or_path!r} is not a local folder and could not be loaded from the "
            f"Hugging Face hub or its local cache ({e.__class__.__name__}). This machine may be offline. Fix: on a "
            f"machine with hub access run `hf download {name_or_path} --local-dir DIR`, copy DIR here and pass "
            f"-p {param} DIR; or use one of the offline models in seqnb.offline_models."
        ) from e
    if tokenizer.pad_token is None:  # GPT-2 and Llama tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.eos_token_id
    return model, tokenizer


def _cache_first(load, source: str, **kwargs):
    """Try the local cache first (instant), then the hub unless offline mode is on (HF_HUB_OFFLINE=1)."""
    try:
        return load(source, local_files_only=True, **kwargs)
    except OSError:
        if is_offline_mode():
            raise
        return load(source, **kwargs)


def add_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> list[int]:
    """Add `tokens` (e.g. `<bksp>`) as atomic special tokens and grow the embeddings to match.

    New rows start at the mean of the existing embeddings, so they do not disturb a pretrained model's outputs.
    Returns the new tokens' ids.
    """
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # resizing announces its (documented) init on every call
        try:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        finally:
            transformers.logging.set_verbosity(verbosity)
    return tokenizer.convert_tokens_to_ids(list(tokens))


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
