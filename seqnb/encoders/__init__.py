"""Decoder LMs as encoders (notebook 05, Suganthan et al. 2025): attention masks, pooling, heads and losses,
HF model classes, and the notebook's experiment, plots and explorer."""

from .masks import mask_matrix, probe_influence, set_attention
from .modeling import EncoderOutput, GemmaEncoderConfig, GemmaEncoderModel
from .pooling import POOLINGS, Pooler

__all__ = ["EncoderOutput", "GemmaEncoderConfig", "GemmaEncoderModel", "POOLINGS", "Pooler", "mask_matrix",
           "probe_influence", "set_attention"]
