"""Figures and explorers every notebook shares.

Figures are functions that return a matplotlib Figure, so they render inline, headless, and save as PNG.
Explorers are thin ipywidgets views over tested functions; they construct and respond headless too, so a notebook
can drive their controls in a cell and CI exercises them."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable, Sequence

import ipywidgets as widgets
import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://matplotlib_inline", "module://ipympl")):
    matplotlib.use("Agg")  # headless unless a notebook front-end chose a backend
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from seqnb.train import History


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


def save_figure(fig: Figure, run_dir: str | Path, name: str) -> Path:
    """Save as `<run_dir>/<name>.png` (150 dpi) and return the path."""
    path = Path(run_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


class PromptExplorer(widgets.VBox):
    """A text box and a button; pressing it shows `respond(text)` (an HTML fragment) below.

    `ask(text)` types and presses in one call and returns the HTML shown.
    """

    def __init__(self, respond: Callable[[str], str], *, description: str, placeholder: str, value: str = ""):
        self.respond = respond
        self.text = widgets.Text(value=value, placeholder=placeholder, description=description,
                                 layout=widgets.Layout(width="420px"))
        self.button = widgets.Button(description="Answer", button_style="primary")
        self.result = widgets.HTML()
        self.button.on_click(lambda _: self._update())
        self.text.on_submit(lambda _: self._update())
        super().__init__([widgets.HBox([self.text, self.button]), self.result])

    def _update(self) -> None:
        try:
            self.result.value = self.respond(self.text.value)
        except ValueError as e:  # bad input is shown, not raised into the front-end
            self.result.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"

    def ask(self, text: str) -> str:
        self.text.value = text
        self.button.click()
        return self.result.value
