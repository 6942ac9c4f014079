"""Views of the Warmup Generations experiment: the sampled warmups with their rewards and weights (early vs late),
learning curves and warmup diagnostics, final metrics and the cost of K, and an explorer widget."""

from __future__ import annotations

import html
from dataclasses import replace

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from seqnb.papers.warmup_generations import method as wg
from seqnb.papers.warmup_generations.experiment import Experiment, Setup, primary_metric, running_sum_ids

NAMES = {"sft": "SFT", "warmup": "Warmup", "warmup_lam0": "Warmup, warmups untrained (lambda=0)",
         "greedy_draft": "SFT on stage 0's greedy drafts", "pause": "pause control", "oracle": "oracle scratchpad",
         "warmup_swap": "Warmup, swapped warmups", "stage0": "stage 0 (before fine-tuning)"}
COLORS = {"sft": "tab:gray", "warmup": "tab:green", "warmup_k1": "tab:olive", "warmup_k2": "tab:cyan",
          "warmup_lam0": "tab:pink", "greedy_draft": "tab:blue", "pause": "tab:orange", "oracle": "tab:purple",
          "warmup_swap": "tab:red", "stage0": "tab:brown"}
# identical curves (several arms at 1.0) stay visible: the oracle dashed and thin, the Warmup arms thick
LINES = {"oracle": dict(ls="--", lw=1.0, zorder=3), "warmup": dict(lw=3.0, zorder=2)}


def name(arm: str, exp: Experiment | None = None) -> str:
    if arm.startswith("warmup_k"):
        return f"Warmup K={arm[len('warmup_k'):]}"
    if arm == "warmup" and exp is not None:
        return f"Warmup K={exp.cfg.n_warmups}"
    return NAMES.get(arm, arm)


def _tokens_html(exp: Experiment, prompt: list[int], warmup: list[int]) -> str:
    """The warmup as text; on the toy, digits that are the running sum at their position are green, others red."""
    if not exp.setup.digit_of:
        return f"<code>{html.escape(exp.setup.text(warmup))}</code>"
    ref = running_sum_ids(prompt, exp.setup)
    cells = []
    for j, t in enumerate(warmup):
        ok = j < len(ref) and t == ref[j]
        cells.append(f"<span style='color:{'#080' if ok else '#c00'}'>{html.escape(exp.setup.text([t]))}</span>")
    return "<code>" + "".join(cells) + "</code>"


def records_html(exp: Experiment, title: str, prompts, targets, records) -> str:
    """Per input: its K sampled warmups with a = log P(c|x), the reward b = log P(y|x,c), the weight
    w = softmax(b/beta), and the greedy answer after that warmup; the warmups with the largest weight (those the
    update leans on most; all of them when the weights tie) are highlighted."""
    rows = []
    for prompt, target, rec in zip(prompts, targets, records):
        top = max(rec["w"])
        rows.append(f"<tr style='border-top:2px solid #888'><td colspan=5>x = "
                    f"<code>{html.escape(exp.setup.text(prompt))}</code> &nbsp; "
                    f"y = <code>{html.escape(exp.setup.text(target))}</code></td></tr>")
        for c, y, a, b, w in zip(rec["warmups"], rec["answers"], rec["a"], rec["b"], rec["w"]):
            style = " style='background:#e6f4e6;font-weight:bold'" if w >= top - 1e-6 else ""
            mark = "✓" if y == target else "✗"
            rows.append(f"<tr{style}><td>{_tokens_html(exp, prompt, c)}</td><td>{a:.2f}</td><td>{b:.2f}</td>"
                        f"<td>{w:.2f}</td><td><code>{html.escape(exp.setup.text(y))}</code> {mark}</td></tr>")
    head = ("<tr><th>warmup c_k</th><th>a = log P(c|x)</th><th>reward b = log P(y|x,c)</th><th>weight w</th>"
            "<th>answer after c_k</th></tr>")
    return f"<p><b>{html.escape(title)}</b></p><table>{head}{''.join(rows)}</table>"


def warmups_html(exp: Experiment, step: int, examples=None, arm: str = "warmup") -> str:
    """`records_html` of the probe inputs (all, or the indices `examples`) at a recorded training step."""
    probe = exp.runs[arm].probe
    records = probe.records[step]
    pick = list(examples) if examples is not None else range(len(records))
    return records_html(exp, f"step {step}", [probe.prompts[i] for i in pick], [probe.targets[i] for i in pick],
                        [records[i] for i in pick])


def plot_learning_curves(exp: Experiment) -> Figure:
    """(A) the task metric on the held-out curve slice over stage-1 steps, every arm (step 0 = the stage-0
    model in the arm's format); (B-D) warmup diagnostics from training: the share of sampled warmups that are
    exactly the running sums (toy), the entropy of the weights / log K, and the MC estimate of -log P(y|x) per
    target token."""
    metric = primary_metric(exp.cfg)
    keys = [("sample_consistency", "sampled warmups = running sums"), ("weight_entropy", "weight entropy / log K"),
            ("mc_nll", "MC NLL of y per token")]
    if not exp.setup.digit_of:
        keys = keys[1:]
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(4.2 * (1 + len(keys)), 3.4))
    for arm, run in exp.runs.items():
        steps, values = run.history.series(metric, "eval")
        style = dict(color=COLORS.get(arm), **LINES.get(arm, {}))
        axes[0].plot([0, *steps], [run.start[metric], *values], marker=".", label=name(arm, exp), **style)
        for ax, (key, title) in zip(axes[1:], keys):
            s, v = run.history.series(key, "train")
            if s and not (key == "weight_entropy" and run.k == 1):  # one warmup: no weights to spread
                ax.plot(s, v, label=name(arm, exp), **style)
                ax.set(title=title, xlabel="stage-1 step")
    for ax, (key, _) in zip(axes[1:], keys):
        if key in ("sample_consistency", "weight_entropy"):  # shares: a flat 1.0 shows as the top of the scale
            ax.set_ylim(-0.03, 1.05)
    axes[0].set(title=f"{metric} on held-out inputs", xlabel="stage-1 step", ylabel=metric)
    axes[0].legend(fontsize=8)
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_final(exp: Experiment) -> Figure:
    """(A) the test metric of every arm, Warmup with swapped warmups, and the stage-0 model; (B) the K sweep:
    the metric and the training tokens processed (sampling + scoring) against K, SFT as K = 0."""
    metric = primary_metric(exp.cfg)
    results = exp.results
    bars = [a for a in results if metric in results[a]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    vals = [results[a][metric] for a in bars]
    ax.barh([name(a, exp) for a in bars], vals, color=[COLORS.get(a, "tab:blue") for a in bars])
    for y, v in enumerate(vals):
        ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel=f"test {metric}", xlim=(0, max(vals) * 1.2 or 1), title="final metric")
    ks = {"sft": 0, **{a: run.k for a, run in exp.runs.items() if run.k}}
    sweep = sorted((k, a) for a, k in ks.items() if "train_tokens" in results[a])
    ax = axes[1]
    if len(sweep) > 1:
        ks = [k for k, _ in sweep]
        ax.plot(ks, [results[a][metric] for _, a in sweep], marker="o", color="tab:green")
        ax.set(xlabel="K (0 = SFT)", ylabel=f"test {metric}", xticks=ks, title="quality and cost against K")
        twin = ax.twinx()
        twin.bar(ks, [results[a]["train_tokens"] / 1e6 for _, a in sweep], alpha=0.25, color="tab:gray", width=0.4)
        twin.set_ylabel("training tokens (M)")
    else:
        ax.axis("off")
    fig.tight_layout()
    return fig


def metrics_table(exp: Experiment) -> pd.DataFrame:
    cols = {"em": "exact match", "bleu": "BLEU", "chrf++": "chrF++", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2",
            "rougeL": "ROUGE-L", "accuracy": "accuracy", "macro_f1": "macro-F1",
            "draft_consistency": "greedy warmup = sums",
            "infer_tokens_per_example": "inference tokens / input", "train_tokens": "training tokens",
            "train_s": "train+eval s"}
    results = exp.results
    df = pd.DataFrame({name(a, exp): {v: results[a].get(k, np.nan) for k, v in cols.items()} for a in results}).T
    return df.dropna(axis=1, how="all")


class WarmupExplorer(widgets.VBox):
    """Pick a probe input and a training step: its K sampled warmups, their rewards and weights, and the answer
    the model gave after each one at that step."""

    def __init__(self, exp: Experiment, arm: str = "warmup"):
        self.exp, self.arm = exp, arm
        probe = exp.runs[arm].probe
        steps = sorted(probe.records)
        self.example = widgets.Dropdown(
            options=[(exp.setup.text(p), i) for i, p in enumerate(probe.prompts)], value=0, description="input")
        self.step = widgets.ToggleButtons(options=[(str(s), s) for s in steps], value=steps[-1],
                                          description="step")
        self.view = widgets.HTML()
        for control in (self.example, self.step):
            control.observe(lambda _: self.render(), names="value")
        super().__init__([self.example, self.step, self.view])
        self.render()

    def render(self) -> None:
        self.view.value = warmups_html(self.exp, self.step.value, [self.example.value], self.arm)


def format_table(setup: Setup, prompt: list[int], warmup: list[int], target: list[int]) -> pd.DataFrame:
    """One training sequence in the decoder-only and the encoder-decoder format: each token and what the loss
    does with it (the encoder-decoder's decoder starts with its start token, which plays `<w>`)."""
    fmt = setup.fmt
    cols = {}
    for label, seq2seq in (("decoder-only", False), ("encoder-decoder (decoder side)", True)):
        f = replace(fmt, seq2seq=seq2seq, decoder_start_id=fmt.decoder_start_id if fmt.seq2seq else fmt.pad_id)
        joint = wg.assemble(f, prompt, warmup, target)
        head = [f"encoder input: {setup.text(prompt)}", "[start]: decoder input only, plays <w>"] if seq2seq else []
        cols[label] = head + [f"{setup.tokenizer.convert_ids_to_tokens(t)}: {wg.ROLE_NAMES[r]}"
                              for t, r in zip(joint.tokens, joint.roles)]
    width = max(map(len, cols.values()))
    return pd.DataFrame({k: v + [""] * (width - len(v)) for k, v in cols.items()})
