"""Notebook 05: a decoder LM fine-tuned as an encoder (Suganthan et al. 2025, arXiv 2503.02656)."""
