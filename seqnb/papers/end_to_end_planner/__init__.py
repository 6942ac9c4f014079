"""Notebook 02: an end-to-end trained planner and LM (Cornille et al., arXiv 2410.12492, building on
arXiv 2404.00614)."""
