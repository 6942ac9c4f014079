"""Notebook 01: Warmup Generations (Li et al. 2025, arXiv 2502.12304)."""
