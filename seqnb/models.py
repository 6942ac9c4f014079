"""Models: small transformers built from configs and trained from scratch, or pretrained ones loaded by hub id,
local folder or local hub mirror, with clear errors when a model cannot be loaded.

Where `load_pretrained(name)` finds a model, first match wins:
1. `name` is a local folder (a `save_pretrained` / `hf download --local-dir` folder).
2. A local hub mirror: with the environment variable `SEQNB_HUB_MIRROR=DIR` set and `DIR/<hub id>` a folder
   (e.g. `DIR/google/gemma-2-2b`), that folder is loaded instead of the hub. Make it on a machine with hub access
   with `hf download ID --local-dir DIR/ID`. Uses: GPU servers without internet (copy DIR there; no code or
   parameter changes), and the CPU rehearsal of every paper preset, where `seqnb.standins.write_model_standins(DIR)`
   puts small stand-ins under the paper models' ids. Ids absent from the mirror still go to the hub.
3. The Hugging Face hub, local cache first (offline with HF_HUB_OFFLINE=1: the cache only).

Pretrained weights load in fp32 (master weights for training; bf16 comes from autocast).
"""

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

from .tasks.hub import exception_chain, mirror_note, mirror_path


class ModelNotAvailableError(RuntimeError):
    """A model is neither a local folder, nor in the hub mirror, nor loadable from the hub or its local cache."""


class GatedModelError(ModelNotAvailableError):
    """The hub model is gated (e.g. google/gemma-2-2b): its licence must be accepted and this machine logged in."""


class NoSuchModelError(ModelNotAvailableError):
    """The hub has no such model, or it is private to another account."""


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
    on a long plateau at 0.02, where a wider start (about 1/sqrt(d_model)) breaks the symmetry of attention.
    The activation is GPT-2's tanh-approximated GELU as torch's fused kernel ("gelu_pytorch_tanh": the same
    function as GPT-2's "gelu_new", up to rounding, and about 30% faster per training step on a small model)."""
    if d_model % n_head:
        raise ValueError(f"parameter 'd_model' ({d_model}) must be divisible by 'n_head' ({n_head})")
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=max_len, n_embd=d_model, n_layer=n_layer, n_head=n_head,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, initializer_range=init_std,
        activation_function="gelu_pytorch_tanh", **_special_ids(tokenizer),
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
    name_or_path: str, *, seq2seq: bool = False, param: str = "model_name",
    dtype: torch.dtype | str | None = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer by hub id, local folder, or hub id found in the local hub mirror (`SEQNB_HUB_MIRROR`).

    Weights load in fp32 by default: training keeps fp32 master weights and gets bf16 compute from autocast
    (`Accelerator(mixed_precision="bf16")`). A bf16 checkpoint such as Qwen/Qwen2.5-0.5B loaded as stored would train
    in pure bf16, where an AdamW step at lr 1e-5 rounds away on almost every weight. Pass `dtype="auto"` for the
    checkpoint's own dtype (e.g. inference only) or another torch dtype.

    A model that cannot be loaded raises `ModelNotAvailableError` (offline / not cached), `GatedModelError` (licence
    not accepted or not logged in) or `NoSuchModelError` (no such id), each naming the notebook parameter `param`
    and the fix."""
    source = resolve_model_source(name_or_path)
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    try:
        tokenizer = _cache_first(AutoTokenizer.from_pretrained, source)
        model = _cache_first(auto.from_pretrained, source, dtype=dtype)
    except OSError as e:
        if Path(source).is_dir():
            raise
        raise _model_error(name_or_path, param, e) from e
    if tokenizer.pad_token is None:  # GPT-2 and Llama tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.eos_token_id
    return model, tokenizer


def resolve_model_source(name_or_path: str) -> str:
    """A local folder as is; a hub id found in the local hub mirror as that folder; any other hub id unchanged."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    mirrored = mirror_path(name_or_path)
    return str(mirrored) if mirrored is not None else name_or_path


def _cache_first(load, source: str, **kwargs):
    """Load from a local folder or the hub mirror; else try the local cache first (instant), then the hub unless
    offline mode is on (HF_HUB_OFFLINE=1)."""
    source = resolve_model_source(source)
    if Path(source).is_dir():
        return load(source, **kwargs)
    try:
        return load(source, local_files_only=True, **kwargs)
    except OSError:
        if is_offline_mode():
            raise
        return load(source, **kwargs)


def _model_error(name: str, param: str, e: BaseException) -> ModelNotAvailableError:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    chain = exception_chain(e)
    copy_here = (f"`hf download {name} --local-dir DIR` on a machine with hub access, copy DIR here and pass "
                 f"-p {param} DIR")
    if any(isinstance(x, GatedRepoError) for x in chain):
        return GatedModelError(
            f"parameter {param!r}: model {name!r} is gated on the Hugging Face hub. Fix: accept its licence on "
            f"https://huggingface.co/{name} with your account, then log this machine in with `hf auth login` (or set "
            f"HF_TOKEN to an access token); or {copy_here}.")
    if any(isinstance(x, RepositoryNotFoundError) for x in chain):
        return NoSuchModelError(
            f"parameter {param!r}: the Hugging Face hub has no model {name!r} (or it is private to another "
            f"account). Fix: check the spelling (the id is owner/name, e.g. google/gemma-2-2b) and pass the right "
            f"one with -p {param}, or a local folder; for a private model log in with `hf auth login` or set "
            "HF_TOKEN.")
    return ModelNotAvailableError(
        f"parameter {param!r}: model {name!r} is not a local folder and could not be loaded from the Hugging Face "
        f"hub or its local cache ({e.__class__.__name__}). This machine may be offline. Fix: run {copy_here}; or "
        f"{mirror_note(name)}; or use one of the offline models in seqnb.offline_models.")


def add_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> list[int]:
    """Add `tokens` (e.g. `<bksp>`) as atomic special tokens and make room for them in the embeddings.

    The embedding matrix never shrinks: it is resized to max(len(tokenizer), its rows), since pretrained matrices
    are often padded beyond the tokenizer (mT5: 250112 rows for 250100 tokens; Qwen2.5: 151936 for 151665). The new
    tokens' rows (input, and output where untied) are set to the mean of the trained rows (ids below the
    tokenizer's size before the call), whether or not a resize was needed, so they do not disturb a pretrained
    model's outputs. Returns the ids of `tokens`.
    """
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    if new:
        rows = model.get_input_embeddings().weight.shape[0]
        trained = min(len(tokenizer), rows)
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
        if len(tokenizer) > rows:
            verbosity = transformers.logging.get_verbosity()
            transformers.logging.set_verbosity_error()  # resizing announces its init; the rows are set below
            try:
                model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            finally:
                transformers.logging.set_verbosity(verbosity)
        ids = tokenizer.convert_tokens_to_ids(new)
        with torch.no_grad():
            inp = model.get_input_embeddings().weight
            inp[ids] = inp[:trained].mean(0).to(inp.dtype)
            out = model.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != inp.data_ptr():
                out.weight[ids] = out.weight[:trained].mean(0).to(out.weight.dtype)
                if getattr(out, "bias", None) is not None:
                    out.bias[ids] = out.bias[:trained].mean().to(out.bias.dtype)
    return tokenizer.convert_tokens_to_ids(list(tokens))


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
