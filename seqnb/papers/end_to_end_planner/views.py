"""Views of the planner experiment: passages coloured by action, cluster exemplars, the perplexity table, PPL vs
oracle-mixing ratio, planner accuracy over training, NLL by position, and the explorer widget."""

from __future__ import annotations

import html
from collections import Counter

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from seqnb.runtime import model_device
from seqnb.papers.end_to_end_planner.corpus import TYPES
from seqnb.papers.end_to_end_planner.method import interface_weights

PALETTE = ["#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5", "#d9d9d9",
           "#bc80bd", "#ccebc5", "#ffed6f"]
ROWS = ["plain", "plain_continue", "uniform", "ora_pred", "frozen_hard", "e2e_st", "frozen_soft", "e2e_soft"]
LABELS = {"plain": "plain LM (no planner)", "plain_continue": "plain LM, fine-tuned for the same steps",
          "uniform": "uniform mixture (control)",
          "ora_pred": "oracle-trained, argmax eval (P1 ORA/PRED)", "ora_soft": "oracle-trained, soft eval (r = 1)",
          "frozen_hard": "frozen planner, argmax (P1 PRED/PRED)", "e2e_st": "end-to-end, straight-through",
          "frozen_soft": "frozen planner, soft mixture", "e2e_soft": "end-to-end, soft mixture (P2)",
          "oracle_eval": "oracle actions at eval (upper bound)"}


def color(action: int) -> str:
    return PALETTE[action % len(PALETTE)]


def planner_probs(model, row: dict) -> np.ndarray:
    """The planner's action distribution (S, k) for every sentence of one encoded document."""
    with torch.no_grad():
        logits = model.planner(torch.tensor(row["sent_emb"], device=model_device(model))[None])[0]
    return torch.softmax(logits / model.tau, -1).cpu().numpy()


def top_words(sentences: list[str], actions: np.ndarray, k: int, n: int = 4) -> dict[int, list[str]]:
    """Per action, the words most over-represented in its sentences against all sentences."""
    words = [s.lower().rstrip(".!?").split() for s in sentences]
    total = Counter(w for ws in words for w in ws)
    out = {}
    for c in range(k):
        inside = Counter(w for ws, a in zip(words, actions) if a == c for w in ws)
        n_in = max(sum(inside.values()), 1)
        score = {w: inside[w] / n_in / (total[w] / sum(total.values())) for w in inside if inside[w] >= 3}
        out[c] = sorted(score, key=score.get, reverse=True)[:n]
    return out


def passage_html(doc: dict, probs: np.ndarray, words: dict[int, list[str]]) -> str:
    """Two rows: each sentence coloured by its oracle (k-means) action and by the planner's argmax; a predicted
    action that differs from the oracle is underlined; hover shows the planner's top-3."""
    rows = []
    for label, acts in (("oracle (k-means)", doc["actions"]), ("planner argmax", probs.argmax(-1).tolist())):
        spans = []
        for j, (s, a) in enumerate(zip(doc["sentences"], acts)):
            top = np.argsort(-probs[j])[:3]
            title = "planner: " + ", ".join(f"a{t} {probs[j, t]:.2f}" for t in top)
            under = "text-decoration:underline wavy #c00;" if a != doc["actions"][j] else ""
            spans.append(f"<span title='{title}' style='background:{color(a)};padding:1px 3px;{under}'>"
                         f"<sup>a{a}</sup>{html.escape(s)}</span>")
        rows.append(f"<div style='margin:4px 0'><b style='display:inline-block;width:130px'>{label}</b>"
                    f"{' '.join(spans)}</div>")
    legend = " ".join(f"<span style='background:{color(c)};padding:1px 4px'>a{c}: {' '.join(w)}</span>"
                      for c, w in words.items())
    return "".join(rows) + f"<div style='font-size:85%;margin-top:4px'>{legend}</div>"


def exemplars(data, k: int, n: int = 3) -> pd.DataFrame:
    """Per action: cluster size, distinctive words, majority latent type and purity (generated corpus), and the
    `n` training sentences nearest to the cluster centre."""
    sents, acts = data.train_sentences, data.train_actions
    words = top_words(sents, acts, k)
    dist = data.kmeans.transform(data.embed(sents))
    rows = []
    for c in range(k):
        idx = np.flatnonzero(acts == c)
        near = idx[np.argsort(dist[idx, c])[:n]]
        row = {"action": f"a{c}", "size": len(idx), "top words": " ".join(words[c])}
        if data.train_types is not None:
            counts = np.bincount(data.train_types[idx], minlength=len(TYPES))
            row.update({"majority type": TYPES[counts.argmax()], "purity": counts.max() / len(idx)})
        row["nearest sentences"] = " | ".join(sents[i] for i in near)
        rows.append(row)
    return pd.DataFrame(rows).set_index("action")


def ppl_table(results: dict) -> pd.DataFrame:
    """All variants: PPL with predicted actions (as trained), with oracle actions, planner accuracy/entropy,
    trainable parameters and wall time (seed means, `± std` when several seeds ran)."""
    cols = ["ppl", "ppl_oracle", "planner_acc", "planner_entropy", "trainable_params", "wall_s"]
    rows = {}
    for name in [*ROWS, *[r for r in results if r.startswith("e2e_soft_r")], "ora_soft", "oracle_eval"]:
        if name not in results:
            continue
        r = results[name]
        rows[LABELS.get(name, f"end-to-end soft, oracle mix r = {name[len('e2e_soft_r'):]}")] = {
            c: (f"{r[c]:.3f} ± {r[c + '_std']:.3f}" if c + "_std" in r else
                (f"{r[c]:,.0f}" if c == "trainable_params" else f"{r[c]:.3f}")) if c in r else ""
            for c in cols}
    return pd.DataFrame(rows).T.rename(columns={"ppl": "PPL (predicted actions)", "ppl_oracle": "PPL (oracle)",
                                                "planner_acc": "planner acc", "planner_entropy": "entropy (nats)",
                                                "trainable_params": "trainable", "wall_s": "train s"})


def plot_mixing(results: dict, ratios: list[float]) -> Figure:
    """PPL with predicted (solid) and oracle (dashed) actions vs the oracle-mixing ratio r of soft end-to-end
    training: r = 0 is e2e_soft, r = 1 the oracle-trained model evaluated with the soft mixture."""
    pts = [(0.0, "e2e_soft"), *[(r, f"e2e_soft_r{r:g}") for r in ratios], (1.0, "ora_soft")]
    pts = [(r, n) for r, n in pts if n in results]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = [r for r, _ in pts]
    for key, style, label in (("ppl", "o-", "predicted actions (reported)"), ("ppl_oracle", "s--", "oracle actions")):
        ys = [results[n][key] for _, n in pts]
        err = [results[n].get(f"{key}_std", 0.0) for _, n in pts]
        ax.errorbar(xs, ys, yerr=err, fmt=style, capsize=3, label=label)
    for name, c in (("frozen_hard", "tab:red"), ("plain", "tab:gray")):
        if name in results:
            ax.axhline(results[name]["ppl"], color=c, ls=":", label=LABELS[name])
    ax.set(xlabel="oracle-mixing ratio r during training", ylabel="test perplexity",
           title="oracle mixing: exposure bias vs trusting the plan")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_planner_training(planner_history, arm_histories: dict) -> Figure:
    """Planner accuracy against the k-means actions and entropy: pre-training, then stage 1 per arm."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    offset = 0
    if planner_history.records:
        for ax, key in zip(axes, ("planner_acc", "planner_entropy")):
            s, v = planner_history.series(key, "eval")
            ax.plot(s, v, "k.-", label="pre-training (CE on k-means actions)")
        offset = planner_history.series("planner_acc", "eval")[0][-1]
    for arm, hist in arm_histories.items():
        for ax, key in zip(axes, ("planner_acc", "planner_entropy")):
            s, v = hist.series(key, "eval")
            ax.plot([offset + x for x in s], v, ".-", label=f"stage 1: {arm}")
    for ax, label in zip(axes, ("planner accuracy (test, vs k-means)", "mean entropy (nats)")):
        ax.axvline(offset, color="gray", lw=0.8)
        ax.set(xlabel="optimizer step (pre-training, then stage 1)", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_nll_by_pos(results_by_row: dict[str, list[float]], max_pos: int = 8) -> Figure:
    """Mean NLL by the target token's position within its sentence (0 = the first word)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, nll in results_by_row.items():
        ax.plot(range(min(len(nll), max_pos)), nll[:max_pos], "o-", label=LABELS.get(name, name))
    ax.set(xlabel="position of the predicted token in its sentence", ylabel="mean NLL (nats)",
           title="where the plan helps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


@torch.no_grad()
def continue_sentence(model, tokenizer, row: dict, j: int, w_j: torch.Tensor, max_new: int = 12) -> str:
    """Greedy continuation of sentence j of an encoded document (its sentences < j as the prefix), with the LM
    conditioned on weights `w_j` (k,) for sentence j and on the planner's own soft weights for earlier ones."""
    end = row["sentence_idx"].index(j) + 1  # through the last token of sentence j - 1
    ids, sidx = row["input_ids"][:end], row["sentence_idx"][:end]
    device = model_device(model)
    logits = model.planner(torch.tensor(row["sent_emb"], device=device)[None])
    w = interface_weights(logits, "soft", tau=model.tau)
    w[0, j] = w_j.to(device)
    stop = set(tokenizer.convert_tokens_to_ids([".", "!", "?"]))
    out = []
    model.eval()
    for _ in range(max_new):
        x = torch.tensor([ids + out], device=device)
        sentence_idx = torch.tensor([sidx + [j] * len(out)], device=device)
        nxt = int(model(x, sentence_idx=sentence_idx, weights=w).logits[0, -1].argmax())
        out.append(nxt)
        if nxt in stop:
            break
    return tokenizer.decode(out, skip_special_tokens=True)


class PlannerExplorer(widgets.VBox):
    """Pick a test passage and a sentence; see the planner's action distribution for that sentence, force an
    action (or keep the planner's mixture) as a soft mixture or argmax, and compare the LM's continuations."""

    def __init__(self, model, data, words: dict[int, list[str]], n_passages: int = 20):
        self.model, self.data, self.words = model, data, words
        self.k = model.k
        n = min(n_passages, len(data.docs["test"]))
        self.passage = widgets.Dropdown(options=[(f"passage {i}", i) for i in range(n)], value=0,
                                        description="passage")
        self.sentence = widgets.IntSlider(value=2, min=1, max=len(data.docs["test"][0]["sentences"]) - 1,
                                          description="sentence")
        self.action = widgets.Dropdown(options=[("planner's mixture", -1)] + [
            (f"a{c}: {' '.join(w[:3])}", c) for c, w in words.items()], value=-1, description="force action")
        self.mode = widgets.ToggleButtons(options=["soft", "argmax"], value="soft", description="interface")
        self.button = widgets.Button(description="Continue", button_style="primary")
        self.result = widgets.HTML()
        self.button.on_click(lambda _: self.update())
        for w in (self.passage, self.sentence, self.action, self.mode):
            w.observe(lambda _: self.update(), names="value")
        super().__init__([widgets.HBox([self.passage, self.sentence]), widgets.HBox([self.action, self.mode]),
                          self.button, self.result])
        self.update()

    def show(self, passage: int, sentence: int, action: int = -1, mode: str = "soft") -> str:
        """Set every control, press Continue, and return the HTML shown."""
        self.passage.value, self.sentence.value, self.action.value, self.mode.value = passage, sentence, action, mode
        self.button.click()
        return self.result.value

    def update(self) -> None:
        doc = self.data.docs["test"][self.passage.value]
        self.sentence.max = len(doc["sentences"]) - 1
        j = min(self.sentence.value, self.sentence.max)
        row = self.data.rows["test"][self.passage.value]
        p = planner_probs(self.model, row)[j]
        own = torch.tensor(p) if self.mode.value == "soft" else torch.eye(self.k)[int(p.argmax())]
        forced = own if self.action.value < 0 else torch.eye(self.k)[self.action.value]
        tok = self.data.tokenizer
        bars = "".join(
            f"<div style='display:flex;align-items:center;font-size:85%'><span style='width:150px'>a{c} "
            f"{html.escape(' '.join(self.words[c][:2]))}</span><span style='background:{color(c)};"
            f"width:{int(300 * p[c])}px;height:12px;display:inline-block'></span>&nbsp;{p[c]:.2f}</div>"
            for c in range(self.k))
        prefix = " ".join(doc["sentences"][:j])
        lines = [("planner's own choice", own), ("forced: " + ("mixture" if self.action.value < 0
                                                                 else f"a{self.action.value}"), forced)]
        conts = "".join(f"<tr><td><b>{name}</b></td><td>{html.escape(continue_sentence(self.model, tok, row, j, w))}"
                        f"</td></tr>" for name, w in lines)
        true = f"a{doc['actions'][j]}" + (f" ({TYPES[doc['types'][j]]})" if "types" in doc else "")
        self.result.value = (
            f"<div style='font-size:90%'><i>prefix:</i> {html.escape(prefix)}</div>"
            f"<div style='margin:6px 0'><b>planner's distribution for sentence {j}</b> (oracle action {true})"
            f"{bars}</div><table>{conts}</table>"
            f"<div style='font-size:85%'>true sentence {j}: {html.escape(doc['sentences'][j])}</div>")
