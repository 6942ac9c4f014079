"""Figures of the quickstart notebook (00)."""

from __future__ import annotations

from typing import Mapping

from matplotlib.figure import Figure

from seqnb.views import plt


def plot_accuracy_by_length(accuracy: Mapping[int, float], *, trained_max: int, title: str = "") -> Figure:
    """Bars of accuracy per operand length; lengths longer than any trained on are shaded."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    lengths = list(accuracy)
    colors = ["tab:blue" if n <= trained_max else "tab:red" for n in lengths]
    ax.bar([str(n) for n in lengths], [accuracy[n] for n in lengths], color=colors)
    for n in lengths:
        ax.annotate(f"{accuracy[n]:.0%}", (str(n), accuracy[n]), ha="center", va="bottom", fontsize=8)
    ax.axvspan(trained_max - 0.5, len(lengths) - 0.5, color="tab:red", alpha=0.08, label="longer than trained")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("digits in the longer operand")
    ax.set_ylabel("exact-match accuracy")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig
