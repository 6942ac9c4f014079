"""Notebook 03: SequenceMatch, imitation learning with a backspace action (Cundy & Ermon, arXiv 2306.05426)."""
