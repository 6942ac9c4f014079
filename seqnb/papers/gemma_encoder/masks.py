"""Causal or bidirectional self-attention for decoder backbones, switched through the transformers 5.x config.

`set_attention(config, "bidirectional")` sets `config.is_causal = False`, which `create_causal_mask` and
`create_sliding_window_causal_mask` read (Gemma, Gemma 2, Gemma 3, Llama-style models), and also
`use_bidirectional_attention = True` where the config has that field, so the attention modules' `is_causal`
agrees. Apply it before the model is built. No library code is edited.

Taught in notebooks/05_gemma_encoder.ipynb, § "Causal vs bidirectional attention in transformers".
"""

from __future__ import annotations

import copy

import torch
from transformers import PretrainedConfig
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

from seqnb.runtime import model_device

ATTENTION_MODES = ("causal", "bidirectional")


def set_attention(config: PretrainedConfig, mode: str) -> PretrainedConfig:
    """Make `config` build a causal or a bidirectional model (in place; returns it)."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"parameter 'attention': unknown mode {mode!r}; use one of {list(ATTENTION_MODES)}")
    bidirectional = mode == "bidirectional"
    config.is_causal = not bidirectional
    if hasattr(config, "use_bidirectional_attention"):
        config.use_bidirectional_attention = bidirectional
    return config


def mask_matrix(config: PretrainedConfig, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """The boolean `[B, L, L]` mask (query row, key column; True = may attend) that transformers builds for
    `attention_mask` under `mode`: the library's own mask functions, for pictures and tests."""
    config = set_attention(copy.deepcopy(config), mode)
    config._attn_implementation = "sdpa"  # the sdpa mask is a plain boolean tensor
    batch, length = attention_mask.shape
    embeds = torch.zeros(batch, length, 1)
    if mode == "causal":
        mask = create_causal_mask(config=config, inputs_embeds=embeds, attention_mask=attention_mask,
                                  past_key_values=None, position_ids=torch.arange(length)[None],
                                  allow_is_causal_skip=False)
    else:
        mask = create_bidirectional_mask(config=config, inputs_embeds=embeds, attention_mask=attention_mask,
                                         allow_is_bidirectional_skip=False)
    return mask[:, 0].bool()


def prebuilt_bidirectional_mask(config: PretrainedConfig, embeds: torch.Tensor,
                                attention_mask: torch.Tensor) -> torch.Tensor | None:
    """The `[B, 1, L, L]` bidirectional mask of `attention_mask`, built once by broadcasting with transformers'
    own `create_bidirectional_mask`, for a backbone whose every layer sees the whole sequence (no sliding window
    shorter than L); None otherwise. Passed to the backbone as its attention mask, it is used as it is: Gemma 3
    would otherwise build its bidirectional masks through `vmap` (an `or_mask_function`), full and sliding,
    on every forward: about a seventh of a tiny encoder's training step (notebook 05's tiny preset)."""
    length = embeds.shape[1]
    window = getattr(config, "sliding_window", None)
    if window is not None and window < length and "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return None
    return create_bidirectional_mask(config=config, inputs_embeds=embeds, attention_mask=attention_mask,
                                     allow_is_bidirectional_skip=False)


@torch.no_grad()
def probe_influence(backbone: torch.nn.Module, input_ids: torch.Tensor, position: int, new_token: int,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-position change ‖Δh_t‖ of the final hidden states when the token at `position` is replaced by
    `new_token` (row 0). Under a causal mask positions before `position` cannot change."""
    device = model_device(backbone)  # the inputs go where the backbone is
    input_ids = input_ids.to(device)
    attention_mask = None if attention_mask is None else attention_mask.to(device)
    changed = input_ids.clone()
    changed[:, position] = new_token
    was_training = backbone.training
    backbone.eval()
    before = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    after = backbone(input_ids=changed, attention_mask=attention_mask).last_hidden_state
    backbone.train(was_training)
    return (after - before)[0].norm(dim=-1)
