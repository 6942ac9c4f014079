"""Figures as functions that return a matplotlib Figure, so they render inline, headless, and save as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://matplotlib_inline", "module://ipympl")):
    matplotlib.use("Agg")  # headless unless a notebook front-end chose a backend
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .train import History


def plot_curves(history: History, panels: Sequence[Sequence[str]], *, split: str | None = None,
                logy: Sequence[bool] = (), title: str = "") -> Figure:
    """One panel per group of logged keys, value against optimizer step (e.g. [["loss"], ["acc_1", "acc_2"]])."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4), squeeze=False)
    for i, (ax, keys) in enumerate(zip(axes[0], panels)):
        for key in keys:
            steps, values = history.series(key, split)
            if not steps:
                raise KeyError(f"nothing logged under {key!r}")
            ax.plot(steps, values, marker="o" if len(steps) < 20 else None, label=key)
        if i < len(logy) and logy[i]:
            ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


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


def save_figure(fig: Figure, run_dir: str | Path, name: str) -> Path:
    """Save as `<run_dir>/<name>.png` (150 dpi) and return the path."""
    path = Path(run_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path
