"""Views of the self-generated-tokens runs: exposure-bias curves (with a checkpoint slider), final bars, cost and
metric tables, and sample generations side by side."""

from __future__ import annotations

import html

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from matplotlib.figure import Figure

COLORS = {"tf": "tab:gray", "ss": "tab:blue", "bash": "tab:green", "rac": "tab:red", "bash_tf": "tab:olive",
          "noise": "tab:purple"}
NAMES = {"tf": "teacher forcing", "ss": "scheduled sampling", "bash": "BASH", "rac": "RAC",
         "bash_tf": "BASH, teacher-forced reading", "noise": "random tokens (control)"}


def plot_exposure(curves: dict[str, list[dict]], index: int = -1) -> Figure:
    """One checkpoint, all arms: (A) per-position error under own (solid) and gold (dashed) prefixes,
    (B) AccErr(<=l), (C) %ExErr(<=l)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    step = None
    for arm, rows in curves.items():
        r = rows[index]
        step = r["step"]
        t = np.arange(1, len(r["e_fr"]) + 1)
        c = COLORS.get(arm)
        axes[0].plot(t, r["e_fr"], "-", color=c, marker="o", ms=3, label=NAMES.get(arm, arm))
        axes[0].plot(t, r["e_tf"], "--", color=c, alpha=0.8)
        axes[1].plot(t, r["acc_err_curve"], color=c, marker="o", ms=3, label=NAMES.get(arm, arm))
        axes[2].plot(t, r["pct_ex_curve"], color=c, marker="o", ms=3, label=NAMES.get(arm, arm))
    axes[0].set(xlabel="answer position t", ylabel="token error rate",
                title="(A) error: solid e_FR(t) own prefix, dashed e_TF(t) gold")
    axes[1].set(xlabel="length l", ylabel=r"AccErr($\leq l$) = $\sum_{t\leq l}$ e_FR - e_TF",
                title="(B) accumulated error")
    axes[2].set(xlabel="length l", ylabel=r"%ExErr = 100 AccErr / $\sum_{t\leq l}$ e_TF",
                title="(C) excess error, % of gold-prefix error")
    axes[0].plot([], [], "k-", label="own prefix (solid)")
    axes[0].plot([], [], "k--", label="gold prefix (dashed)")
    axes[0].legend(fontsize=7, loc="upper left")
    axes[1].legend(fontsize=8, loc="upper left")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"exposure bias at step {step}", y=1.02)
    fig.tight_layout()
    return fig


def plot_checkpoints(curves: dict[str, list[dict]]) -> Figure:
    """Small multiples (the static stand-in for the slider): one panel per checkpoint, gap e_FR(t) - e_TF(t).
    Each panel has its own y scale (the first, teacher-forced checkpoint's gap dwarfs the later ones)."""
    n = len(next(iter(curves.values())))
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8), squeeze=False)
    for i, ax in enumerate(axes[0]):
        for arm, rows in curves.items():
            gap = np.array(rows[i]["e_fr"]) - np.array(rows[i]["e_tf"])
            ax.plot(np.arange(1, len(gap) + 1), gap, color=COLORS.get(arm), label=NAMES.get(arm, arm))
        ax.set_title(f"step {rows[i]['step']}", fontsize=9)
        ax.set_xlabel("position t")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("gap e_FR(t) - e_TF(t)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_training(curves: dict[str, list[dict]]) -> Figure:
    """Over checkpoints: exact match, own-prefix error and %ExErr per arm."""
    keys = [("em", "exact match"), ("fr_err", "own-prefix token error"), ("pct_ex", "%ExErr(<=T)")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for ax, (k, label) in zip(axes, keys):
        for arm, rows in curves.items():
            ax.plot([r["step"] for r in rows], [r[k] for r in rows], marker="o", color=COLORS.get(arm),
                    label=NAMES.get(arm, arm))
        ax.set(xlabel="optimizer step", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_final(results: dict[str, dict[str, float]], arms) -> Figure:
    """Bars per arm (seed std as error bars when several seeds ran): exact match, own/gold error, %ExErr."""
    keys = [("em", "exact match"), ("fr_err", "token error, own prefix"), ("tf_err", "token error, gold prefix"),
            ("pct_ex", "%ExErr(<=T)")]
    fig, axes = plt.subplots(1, len(keys), figsize=(13, 3.0))
    for ax, (k, label) in zip(axes, keys):
        vals = [results[a][k] for a in arms]
        errs = [results[a].get(f"{k}_std", 0.0) for a in arms]
        bars = ax.bar(list(arms), vals, yerr=errs, color=[COLORS.get(a) for a in arms], capsize=3)
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
        ax.set_title(label, fontsize=10)
        ax.margins(y=0.2)
    fig.tight_layout()
    return fig


class CheckpointSlider(widgets.VBox):
    """Move through training checkpoints; the exposure figure of the chosen one is redrawn below."""

    def __init__(self, curves: dict[str, list[dict]]):
        self.curves = curves
        steps = [r["step"] for r in next(iter(curves.values()))]
        self.slider = widgets.SelectionSlider(options=[(str(s), i) for i, s in enumerate(steps)],
                                              value=len(steps) - 1, description="step")
        self.out = widgets.Output()
        self.slider.observe(lambda _: self.show(self.slider.value), names="value")
        super().__init__([self.slider, self.out])
        self.show(self.slider.value)

    def show(self, index: int) -> Figure:
        self.out.clear_output(wait=True)
        fig = plot_exposure(self.curves, index)
        with self.out:
            display(fig)
        plt.close(fig)
        return fig


def metrics_table(results: dict[str, dict[str, float]], arms, dist_key: str | None) -> pd.DataFrame:
    cols = {"em": "exact match", "tok_acc": "token acc", "tf_err": "err gold prefix", "fr_err": "err own prefix",
            "acc_err": "AccErr(<=T)", "pct_ex": "%ExErr", "ex_share": "ExShare %", "recovery_rate": "recovery",
            "err_clean_prefix": "err | clean own prefix", "err_after_error": "err | own prefix has error",
            "edit_dist": "edit dist"}
    if dist_key:
        cols[dist_key] = dist_key.replace("_", " ")
    cols.update({"wall_s": "train+eval s", "gen_s": "offline gen s", "extra_fwd": "extra fwd passes",
                 "gen_tokens": "generated tokens"})
    df = pd.DataFrame({NAMES.get(a, a): {v: results[a].get(k, np.nan) for k, v in cols.items()} for a in arms}).T
    return df


def samples_html(prompts: list[str], refs: list[str], gens: dict[str, list[str]], n: int = 5) -> str:
    """A table: prompt, reference, each arm's greedy answer with the tokens that differ from the reference (at
    the same position) in red; rows where some arm is wrong come first."""
    order = sorted(range(len(refs)), key=lambda i: -sum(g[i] != refs[i] for g in gens.values()))[:n]
    head = "".join(f"<th>{html.escape(NAMES.get(a, a))}</th>" for a in gens)
    body = []
    for i in order:
        cells = [f"<td><code>{html.escape(prompts[i])}</code></td>", f"<td><code>{html.escape(refs[i])}</code></td>"]
        for g in gens.values():
            marked = "".join(
                html.escape(ch) if j < len(refs[i]) and ch == refs[i][j]
                else f"<b style='color:#c00'>{html.escape(ch)}</b>" for j, ch in enumerate(g[i]))
            cells.append(f"<td><code>{marked}</code> {'✓' if g[i] == refs[i] else ''}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table><tr><th>prompt</th><th>reference</th>{head}</tr>{''.join(body)}</table>")


def contexts_html(model, task, p_max: float, n_rows: int = 64) -> str:
    """For one training problem that `model` gets wrong free-running: the reference, the model's own greedy
    answer, and the input each mixing arm builds from them at eps = p_max (own tokens in red)."""
    import torch

    from seqnb.papers.self_generated_tokens.method import SelfGenStep, collate
    from seqnb.papers.self_generated_tokens.exposure import greedy_answers, teacher_forced_answers

    rows = task.train_rows[:n_rows]
    batch = collate(rows, task.pad)
    own, own_len = greedy_answers(model, [r["prompt"] for r in rows], task.answer_len, pad_id=task.pad,
                                  eos_id=task.eos, allowed=task.allowed)
    pools = {"bash_tf": teacher_forced_answers(model, rows, pad_id=task.pad, allowed=task.allowed)}
    n_wrong = [int((own[j, : len(r["answer"])] != torch.tensor(r["answer"])).sum()) for j, r in enumerate(rows)]
    i = max(range(len(rows)), key=lambda j: n_wrong[j])
    ref = rows[i]["answer"]
    lines = [("reference (every target)", html.escape(task.text(ref))),
             ("own greedy answer", html.escape(task.text(own[i, : own_len[i]].tolist())))]
    draws = [("ss", 0), ("bash", 0), ("bash", 1), ("bash", 2), ("bash_tf", 0), ("noise", 0), ("rac", 0), ("rac", 1),
             ("rac", 2)]
    for arm, seed in draws:
        pool = pools.get(arm, (own, own_len))
        step = SelfGenStep(arm=arm, eps_start=0, total_steps=1, p_max=p_max, allowed=task.allowed, seed=seed,
                           regenerate=lambda m, pool=pool: pool, pad_id=task.pad, eos_id=task.eos,
                           vocab_size=len(task.tokenizer))
        inputs = step.build(model, batch, 1)[0]
        ans = inputs[i, batch.ans_start[i]: batch.ans_start[i] + batch.ans_len[i]].tolist()
        marked = "".join(html.escape(task.text([t])) if t == g else
                         f"<b style='color:#c00'>{html.escape(task.text([t]))}</b>" for t, g in zip(ans, ref))
        lines.append((f"{NAMES[arm]} input (coins {seed})", marked))
    body = "".join(f"<tr><td>{name}</td><td><code>{text}</code></td></tr>" for name, text in lines)
    return f"<table>{body}</table>"
