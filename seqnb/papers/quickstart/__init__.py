"""Notebook 00: teacher-forced SFT of a small decoder on multi-digit addition (the baseline every paper
starts from; its step is `seqnb.train.sft_step`, so this folder has no `method.py`)."""
