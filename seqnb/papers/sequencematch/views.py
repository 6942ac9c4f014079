"""Views of SequenceMatch runs: backspace traces (HTML and text), comparison figures and a trace explorer."""

from __future__ import annotations

import html
import re
from collections import Counter

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from seqnb.runtime import model_device
from seqnb.tasks import arithmetic_answer
from seqnb.papers.sequencematch.backspace import Trace, collate_actions
from seqnb.papers.sequencematch.experiment import EVAL_TEMPERATURES, Vocab, generate, is_correct

BKSP_GLYPH = "⌫"


def deleted_positions(trace: Trace, bksp_id: int) -> set[int]:
    """Indices of actions whose token a later `<bksp>` removed."""
    stack, deleted = list(range(trace.prompt_len)), set()
    for i in range(trace.prompt_len, len(trace.actions)):
        if trace.actions[i] != bksp_id:
            stack.append(i)
        elif len(stack) > trace.prompt_len:
            deleted.add(stack.pop())
    return deleted


def _glyph(token_id: int, vocab: Vocab) -> str:
    if token_id == vocab.bksp:
        return BKSP_GLYPH
    if token_id == vocab.eos:
        return "$"
    return vocab.text([token_id])


def trace_text(trace: Trace, vocab: Vocab, correct: bool | None = None) -> str:
    """`1234= 4 2 2̶ ⌫ 1 3 $ -> 4213 ✓`: deleted tokens struck through, the final answer after the arrow."""
    deleted = deleted_positions(trace, vocab.bksp)
    steps = []
    for i in range(trace.prompt_len, len(trace.actions)):
        g = _glyph(trace.actions[i], vocab)
        steps.append(g + "\u0336" if i in deleted else g)
    answer = vocab.text(trace.edited[trace.prompt_len :])
    mark = {True: " ✓", False: " ✗", None: ""}[correct]
    return f"{vocab.text(trace.actions[: trace.prompt_len])} {' '.join(steps)} -> {answer or '∅'}{mark}"


def trace_html(trace: Trace, vocab: Vocab, correct: bool | None = None) -> str:
    """One line of monospace glyphs: deleted tokens red and struck, `<bksp>` grey, forced tokens on yellow, then
    the final answer in green (correct), red (wrong) or black (unknown)."""
    deleted = deleted_positions(trace, vocab.bksp)
    parts = [f"<span style='color:#555'>{html.escape(vocab.text(trace.actions[: trace.prompt_len]))}</span>"]
    for i in range(trace.prompt_len, len(trace.actions)):
        style = []
        if trace.actions[i] == vocab.bksp:
            style.append("color:#999")
        elif i in deleted:
            style.append("color:#c00;text-decoration:line-through")
        if i < trace.prompt_len + trace.n_forced:
            style.append("background:#ffe680")
        parts.append(f"<span style='{';'.join(style)}'>{html.escape(_glyph(trace.actions[i], vocab))}</span>")
    answer = html.escape(vocab.text(trace.edited[trace.prompt_len :]) or "∅")
    color = {True: "#080", False: "#c00", None: "#000"}[correct]
    return (f"<code style='font-size:110%'>{' '.join(parts)} → <b style='color:{color}'>{answer}</b></code>"
            f"{'' if trace.ended else ' <i>(hit the action cap)</i>'}")


@torch.no_grad()
def bksp_probabilities(model, trace: Trace, vocab: Vocab) -> list[tuple[str, str, float]]:
    """For each action of a trace: (action, edited answer before it, pi(<bksp> | that state))."""
    batch = collate_actions([{"actions": trace.actions, "prompt_len": trace.prompt_len}], bksp_id=vocab.bksp,
                            pad_id=vocab.pad)
    was_training = model.training
    model.eval()
    logits = batch.to(model_device(model)).forward(model)[0].float()
    model.train(was_training)
    probs = torch.softmax(logits.masked_fill(~vocab.allowed.to(logits.device), float("-inf")), dim=-1)
    rows, edited = [], list(trace.actions[: trace.prompt_len])
    for t in range(trace.prompt_len - 1, len(trace.actions) - 1):
        a = trace.actions[t + 1]
        rows.append((_glyph(a, vocab), vocab.text(edited[trace.prompt_len :]), probs[t, vocab.bksp].item()))
        if a != vocab.bksp:
            edited.append(a)
        elif len(edited) > trace.prompt_len:
            edited.pop()
    return rows


def plot_arms(results: dict[str, dict[str, float]]) -> Figure:
    """Grouped bars per arm: sampled accuracy at each temperature and recovery from an injected error."""
    keys = ["acc_greedy"] + [f"acc_t{t}" for t in EVAL_TEMPERATURES] + ["recovery_first"]
    labels = ["accuracy greedy"] + [f"accuracy T={t}" for t in EVAL_TEMPERATURES] + ["recovery after\ninjected token"]
    arms = list(results)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(arms)
    x = np.arange(len(keys))
    for i, arm in enumerate(arms):
        values = [results[arm][k] for k in keys]
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=arm)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.28)
    ax.set_ylabel("fraction of held-out prompts")
    ax.legend(fontsize=8, ncol=len(arms), loc="upper center")
    fig.tight_layout()
    return fig


def plot_bksp_positions(traces: dict[str, list[Trace]], vocab: Vocab) -> Figure:
    """Where backspaces happen (length of the edited answer when `<bksp>` is chosen) and how many per
    generation, per arm."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for arm, ts in traces.items():
        where, counts = Counter(), Counter()
        for t in ts:
            length, n = 0, 0
            for a in t.actions[t.prompt_len :]:
                if a == vocab.bksp:
                    where[length] += 1
                    n += 1
                    length = max(length - 1, 0)
                else:
                    length += 1
            counts[n] += 1
        xs = range(0, 12)
        ax1.plot(xs, [where[x] / len(ts) for x in xs], marker="o", label=arm)
        ax2.plot(range(6), [counts[n] / len(ts) for n in range(6)], marker="o", label=arm)
    ax1.set(xlabel="answer length when <bksp> was chosen", ylabel="backspaces per generation")
    ax2.set(xlabel="backspaces in a generation", ylabel="fraction of generations", yscale="log")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return fig


class TraceExplorer(widgets.VBox):
    """Type a prompt, optionally force a wrong first answer token, pick a model and a temperature: see traces."""

    def __init__(self, models: dict, vocab: Vocab, cfg, value: str):
        self.models, self.vocab, self.cfg = models, vocab, cfg
        self.prompt = widgets.Text(value=value, description="prompt", layout=widgets.Layout(width="360px"))
        self.force = widgets.Text(value="", description="force first", placeholder="e.g. 9")
        self.arm = widgets.Dropdown(options=list(models), description="model")
        self.temperature = widgets.FloatSlider(value=0.0, min=0.0, max=2.0, step=0.25, description="T (0=greedy)")
        self.button = widgets.Button(description="Generate", button_style="primary")
        self.result = widgets.HTML()
        self.button.on_click(lambda _: self._update())
        super().__init__([widgets.HBox([self.prompt, self.force]), widgets.HBox([self.arm, self.temperature]),
                          self.button, self.result])

    def explain(self, prompt: str, force: str, arm: str, temperature: float) -> str:
        """Five seeded generations for one prompt, as trace lines marked right or wrong."""
        prompt, target = parse_prompt(prompt, self.cfg)
        forced = None
        if force.strip():
            ids = self.vocab.tokenizer(force.strip(), add_special_tokens=False)["input_ids"]
            if len(ids) != 1 or ids[0] not in self.vocab.answer_tokens:
                raise ValueError("force: one answer token (e.g. a digit), or leave empty")
            forced = [ids] * 5
        traces = generate(self.models[arm], self.vocab, [prompt] * 5, self.cfg, temperature=temperature,
                          force=forced, seed=0)
        return "<br>".join(
            trace_html(t, self.vocab, is_correct(t, self.vocab, self.cfg.task, target)) for t in traces
        )

    def _update(self) -> None:
        try:
            self.result.value = self.explain(self.prompt.value, self.force.value, self.arm.value,
                                             self.temperature.value)
        except ValueError as e:
            self.result.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"

    def ask(self, prompt: str, force: str = "", arm: str | None = None, temperature: float = 0.0) -> str:
        self.prompt.value, self.force.value, self.temperature.value = prompt, force, temperature
        self.arm.value = arm or self.arm.value
        self.button.click()
        return self.result.value


def parse_prompt(text: str, cfg) -> tuple[str, str]:
    """A typed prompt in the task's format, and its reference answer ("" for the permutation task)."""
    if cfg.task == "permutation":
        digits = text.strip().removesuffix("=")
        if not re.fullmatch(r"\d+", digits) or len(set(digits)) != len(digits) or len(digits) > cfg.max_k:
            raise ValueError(f"type up to {cfg.max_k} distinct digits, e.g. 3172")
        return digits + "=", ""
    try:
        return text.strip() + " ", arithmetic_answer(text)
    except ValueError:
        raise ValueError("type a question like: In base 7, what is 52 - 4?") from None


def plot_attend(actions: list[int], prompt_len: int, vocab: Vocab) -> Figure:
    """The attention pattern that lets one forward pass train on an action sequence containing `<bksp>`."""
    from seqnb.papers.sequencematch.backspace import backspace_inputs

    ids, pos, attend = backspace_inputs(actions, prompt_len, vocab.bksp)
    labels = [_glyph(a, vocab) if i else "^" for i, a in enumerate(actions)]
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    ax.imshow(attend.numpy(), cmap="Greens", vmin=0, vmax=1.4)
    ax.set_xticks(range(len(actions)), labels)
    ax.set_yticks(range(len(actions)), [f"{lab}  pos {p}" for lab, p in zip(labels, pos.tolist())])
    ax.set_xlabel("key (action)")
    ax.set_ylabel("query row (action, position id)")
    ax.set_title("rows see only surviving tokens; a ⌫ row copies\nthe new last token's input and position")
    fig.tight_layout()
    return fig
