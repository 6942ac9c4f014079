"""A decoder LM turned into an encoder, as HF model classes: backbone (causal or bidirectional attention) →
pooler → dropout → MLP head. `GemmaEncoderModel.from_decoder(decoder, ...)` takes over a decoder's weights;
`save_pretrained` / `from_pretrained` / `AutoModel` work as for any transformers model."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from seqnb.papers.gemma_encoder.losses import classification_loss, listwise_loss, regression_loss
from seqnb.papers.gemma_encoder.masks import ATTENTION_MODES, prebuilt_bidirectional_mask, set_attention
from seqnb.papers.gemma_encoder.pooling import POOLINGS, LearnableTokens, Pooler

HEAD_TYPES = ("classification", "regression", "ranking", "embedding")


class GemmaEncoderConfig(PreTrainedConfig):
    """`backbone_config`: the decoder's config (object or dict). `head_type`: classification (num_labels
    logits), regression (1 score), ranking (1 score per candidate; rows come in groups of `group_size`) or
    embedding (the L2-normalised pooled vector, for bi-encoders). `num_probes`: attn_query's queries and the
    learnable tokens; `kv_probes`: attn_kv's key/value probes. `encoder_dropout` p is applied to attention
    probabilities, to every attention and MLP sub-layer output, to the pooled vector and inside the head."""

    model_type = "seqnb_gemma_encoder"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(self, backbone_config=None, attention="bidirectional", pooling="mean", pooling_k=1,
                 num_probes=1, kv_probes=8, pool_heads=4, encoder_dropout=0.0, head_type="classification",
                 group_size=8, initializer_range=0.02, **kwargs):
        if isinstance(backbone_config, dict):
            backbone_config = AutoConfig.for_model(**backbone_config)
        checks = (("attention", attention, ATTENTION_MODES), ("pooling", pooling, POOLINGS),
                  ("head_type", head_type, HEAD_TYPES))
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"parameter {name!r}: unknown value {value!r}; use one of {list(allowed)}")
        if not 0.0 <= encoder_dropout < 1.0:
            raise ValueError(f"parameter 'encoder_dropout': must be in [0, 1), got {encoder_dropout}")
        self.backbone_config = backbone_config
        self.attention, self.pooling, self.pooling_k = attention, pooling, pooling_k
        self.num_probes, self.kv_probes, self.pool_heads = num_probes, kv_probes, pool_heads
        self.encoder_dropout = encoder_dropout
        self.head_type, self.group_size, self.initializer_range = head_type, group_size, initializer_range
        super().__init__(**kwargs)  # num_labels (classes) is a standard PreTrainedConfig field


@dataclass
class EncoderOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # class logits, scores, or the normalised embedding
    pooled: torch.Tensor | None = None
    pool_attention: torch.Tensor | None = None  # attn_query weights [B, heads, queries, L]


class MLPHead(nn.Sequential):
    """Dropout → Linear(d, d) → tanh → Dropout → Linear(d, out) (BERT's pooler activation; our choice)."""

    def __init__(self, d: int, out: int, p: float):
        super().__init__(nn.Dropout(p), nn.Linear(d, d), nn.Tanh(), nn.Dropout(p), nn.Linear(d, out))


def _residual_dropout(p: float, module: nn.Module, args, output):
    if isinstance(output, tuple):  # attention returns (states, weights)
        return (F.dropout(output[0], p, module.training), *output[1:])
    return F.dropout(output, p, module.training)


def residual_branches(layer: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The last module of each residual branch of a decoder layer, whose output residual dropout acts on: with
    Gemma 2/3's sandwich norms, the post-attention and post-feed-forward norms (as T5Gemma places it: dropout after
    the norm keeps train and eval on one scale); else (Llama-style) the attention and the MLP themselves."""
    if hasattr(layer, "pre_feedforward_layernorm"):
        return layer.post_attention_layernorm, layer.post_feedforward_layernorm
    return layer.self_attn, layer.mlp


class GemmaEncoderModel(PreTrainedModel):
    """A decoder's body as an encoder: backbone → `Pooler` → head (`GemmaEncoderConfig`). The name is the paper's;
    nothing is Gemma-specific. The backbone is any Llama-style decoder body whose attention mask transformers
    builds from `config.is_causal` (`set_attention`), with `layers[i].self_attn` / `.mlp` (read when
    `encoder_dropout` > 0) and `embed_tokens` (read by `learnable_tokens` pooling): Gemma 1-3, Llama, SmolLM2,
    Qwen2 (tested: Gemma 2 and SmolLM2).

    Example::

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from seqnb.papers.gemma_encoder.method import GemmaEncoderModel
        from seqnb.train import sft_step

        decoder = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M", dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M")
        tokenizer.pad_token = tokenizer.eos_token
        model = GemmaEncoderModel.from_decoder(decoder, attention="bidirectional", pooling="mean", num_labels=2)
        batch = tokenizer(["a gripping, moving film", "a dull and clumsy script"], padding=True, return_tensors="pt")
        batch["labels"] = torch.tensor([1, 0])
        loss, logs = sft_step(model, batch, 0)  # cross-entropy of the head on the pooled bidirectional states
        loss.backward()
    """

    config_class = GemmaEncoderConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: GemmaEncoderConfig):
        super().__init__(config)
        backbone_config = set_attention(copy.deepcopy(config.backbone_config), config.attention)
        backbone_config.attention_dropout = config.encoder_dropout
        self.backbone = AutoModel.from_config(backbone_config)
        d, p = backbone_config.hidden_size, config.encoder_dropout
        self.pooler = Pooler(config.pooling, d, k=config.pooling_k, num_probes=config.num_probes,
                             kv_probes=config.kv_probes, num_heads=config.pool_heads)
        self.tokens = LearnableTokens(d, config.num_probes) if config.pooling == "learnable_tokens" else None
        out = config.num_labels if config.head_type == "classification" else 1
        self.head = None if config.head_type == "embedding" else MLPHead(d, out, p)
        self.dropout_hooks = []
        if p > 0:
            for layer in self.backbone.layers:
                for sub in residual_branches(layer):
                    self.dropout_hooks.append(sub.register_forward_hook(partial(_residual_dropout, p)))
        self.post_init()

    @classmethod
    def from_decoder(cls, decoder: PreTrainedModel, **config_kwargs) -> "GemmaEncoderModel":
        """An encoder whose backbone holds `decoder`'s body weights (its LM head is dropped)."""
        encoder = cls(GemmaEncoderConfig(backbone_config=decoder.config.to_dict(), **config_kwargs))
        encoder.backbone.load_state_dict(decoder.base_model.state_dict())
        return encoder.to(device=decoder.device, dtype=decoder.dtype)

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs) -> EncoderOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds, pool_mask = self.backbone.embed_tokens(input_ids), attention_mask
        if self.tokens is not None:
            embeds, attention_mask, pool_mask = self.tokens(embeds, attention_mask)
        if self.config.attention == "bidirectional":
            prebuilt = prebuilt_bidirectional_mask(self.backbone.config, embeds, attention_mask)
            attention_mask = attention_mask if prebuilt is None else prebuilt
        h = self.backbone(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
        pooled = self.pooler(h, pool_mask)
        pool_attention = getattr(getattr(self.pooler, "attention", None), "weights", None)
        if self.head is None:
            logits = F.normalize(F.dropout(pooled, self.config.encoder_dropout, self.training), dim=-1)
        else:
            logits = self.head(pooled)
        loss = None if labels is None else self.loss(logits, labels)
        return EncoderOutput(loss=loss, logits=logits, pooled=pooled, pool_attention=pool_attention)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        kind = self.config.head_type
        if kind == "classification":
            return classification_loss(logits, labels)
        if kind == "regression":
            return regression_loss(logits, labels)
        if kind == "ranking":  # labels: relevance of each candidate, groups of group_size rows
            g = self.config.group_size
            return listwise_loss(logits.view(-1, g), labels.view(-1, g))
        raise ValueError("head_type 'embedding' has no per-row loss: use in_batch_contrastive_loss on pairs")


AutoConfig.register(GemmaEncoderConfig.model_type, GemmaEncoderConfig)
AutoModel.register(GemmaEncoderConfig, GemmaEncoderModel)
