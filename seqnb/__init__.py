"""seqnb: notebooks and a library for training sequence models beyond teacher forcing."""

__version__ = "0.1.0"
