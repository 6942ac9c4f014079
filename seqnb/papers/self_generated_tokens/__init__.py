"""Notebook 04: training on self-generated tokens, scheduled sampling, BASH and RAC (Cen et al.,
arXiv 2410.14655)."""
