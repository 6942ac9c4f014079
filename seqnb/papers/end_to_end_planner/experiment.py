"""The planner experiment (notebook 02): corpus and actions, stage 0 (LM and planner pre-training), the arms of
stage 1 with one budget, perplexity with predicted actions, seed summaries and the claims.

Arms (stage 1 starts every arm from the same stage-0 LM and planner, except the two pipeline arms, which start
from the arm before them as in the papers' code; base LM frozen; adapters and codebooks trained, plus the planner in
the end-to-end arms):

| arm | trained with | evaluated with | planner trained |
|---|---|---|---|
| plain_continue | no plan; the base LM itself is fine-tuned (control for the extra steps) | no plan | no |
| uniform | w = 1/k (control for the extra parameters) | same | no |
| ora | oracle one-hot (P1 ORA) | argmax (row ora_pred), soft (r = 1), oracle (upper bound) | no |
| frozen_hard | planner argmax (P1 PRED/PRED) | argmax | no |
| e2e_st | straight-through | argmax | yes |
| frozen_soft | planner probabilities | same | no |
| e2e_soft | planner probabilities (P2) | same | yes |
| e2e_soft_mix | soft, oracle one-hot with probability r per sentence | soft (row e2e_soft_r{r}) | yes |
| pipeline_pred | planner argmax, starting from the trained ora arm (P1's ORA -> PRED) | argmax | no |
| pipeline_e2e | planner probabilities, starting from pipeline_pred (P2's ORA -> PRED -> joint) | soft | yes |
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import transformers
from datasets import Dataset

from seqnb.config import ConfigError
from seqnb.collate import IGNORE_INDEX, pad_sequences
from seqnb.embedders import transformer_embedder
from seqnb.models import build_decoder, count_parameters, load_pretrained
from seqnb.papers.end_to_end_planner.config import ARMS, PIPELINE, Config
from seqnb.experiment import ArmRun, seed_summary, training_cost
from seqnb.record import Claim
from seqnb.tasks import load_hub_dataset
from seqnb.papers.end_to_end_planner.corpus import plan_corpus
from seqnb.tokenizers import word_tokenizer
from seqnb.train import History, ParamGroup, TrainArgs, train
from seqnb.papers.end_to_end_planner.method import (
    ActionConditionedLM, PlannerLMStep, SentencePlanner, fit_actions, planner_metrics, planner_step, score,
    set_trainable, split_sentences, tfidf_embedder,
)

# arm -> (train interface, evaluation interfaces {result row: interface}, planner trained)
ARM_SPECS = {
    "plain_continue": ("none", {"plain_continue": "none"}, False),
    "uniform": ("uniform", {"uniform": "uniform"}, False),
    "ora": ("oracle", {"ora_pred": "hard", "ora_soft": "soft"}, False),
    "frozen_hard": ("hard", {"frozen_hard": "hard"}, False),
    "e2e_st": ("st", {"e2e_st": "hard"}, True),
    "frozen_soft": ("soft", {"frozen_soft": "soft"}, False),
    "e2e_soft": ("soft", {"e2e_soft": "soft"}, True),
    "pipeline_pred": ("hard", {"pipeline_pred": "hard"}, False),
    "pipeline_e2e": ("soft", {"pipeline_e2e": "soft"}, True),
}


@dataclass
class PlanData:
    tokenizer: object
    docs: dict[str, list[dict]]  # split -> [{"sentences", "types" (plans only), "actions"}]
    rows: dict[str, Dataset]
    embed: object  # sentences -> (n, d_e) array
    kmeans: object
    train_sentences: list[str]
    train_actions: np.ndarray
    train_types: np.ndarray | None


def build_data(cfg: Config, tokenizer=None) -> PlanData:
    """Documents split into sentences, embedded, clustered into k actions (fit on training sentences), tokenised
    with each token's target sentence."""
    if cfg.corpus == "plans":
        docs = plan_corpus(cfg.n_train_docs, cfg.n_test_docs, seed=cfg.seed, n_sents=cfg.n_sents,
                           p_first=cfg.p_first)
        tokenizer = word_tokenizer([" ".join(d["sentences"]) for d in docs["train"]], vocab_size=200)
    else:
        if tokenizer is None:  # the LM's own tokenizer (a hub corpus is tokenised for a pretrained LM)
            tokenizer = load_pretrained(cfg.model_name, param="model_name")[1]
        docs = _hub_docs(cfg, tokenizer)
    train_sents = [s for d in docs["train"] for s in d["sentences"]]
    if cfg.embedder == "tfidf":
        embed = tfidf_embedder(train_sents, cfg.embed_dim, cfg.kmeans_seed)
    else:
        embed = transformer_embedder(cfg.embedder, device="cuda" if torch.cuda.is_available() else "cpu")
    e_train = embed(train_sents)
    km = fit_actions(e_train, cfg.k, cfg.kmeans_seed)
    rows = {}
    for split, ds in docs.items():
        e = e_train if split == "train" else embed([s for d in ds for s in d["sentences"]])
        acts, i = km.predict(e), 0
        out = []
        for d in ds:
            n = len(d["sentences"])
            d["actions"] = acts[i: i + n].tolist()
            out.append(encode_doc(tokenizer, d["sentences"], e[i: i + n], d["actions"]))
            i += n
        rows[split] = Dataset.from_list(out)
    types = np.array([t for d in docs["train"] for t in d["types"]]) if cfg.corpus == "plans" else None
    return PlanData(tokenizer, docs, rows, embed, km, train_sents, km.labels_, types)


def _hub_docs(cfg: Config, tokenizer) -> dict[str, list[dict]]:
    """Articles from the hub, each cut to its first whole sentences within cfg.max_tokens LM tokens. Streamed:
    only the shards that hold the articles used are read (English Wikipedia is about 11 GB of Parquet), shuffled
    through a buffer of 10,000 articles."""
    ds = load_hub_dataset(cfg.corpus, cfg.corpus_config or None, split="train", param="corpus", streaming=True)
    ds = ds.shuffle(seed=cfg.kmeans_seed, buffer_size=10_000).take(2 * (cfg.n_train_docs + cfg.n_test_docs))
    docs = []
    for text in (row["text"] for row in ds):
        sents, used = [], 1
        for s in split_sentences(text.replace("\n", " ")):
            used += len(tokenizer(" " + s, add_special_tokens=False)["input_ids"])
            if used > cfg.max_tokens:
                break
            sents.append(s)
        if len(sents) >= 2:
            docs.append({"sentences": sents})
    return {"train": docs[: cfg.n_train_docs], "test": docs[cfg.n_train_docs: cfg.n_train_docs + cfg.n_test_docs]}


def encode_doc(tokenizer, sentences: list[str], emb: np.ndarray, actions: list[int]) -> dict:
    """Token ids (BOS first), each position's target sentence (that of the next token; the LM at position t is
    conditioned on the action of the sentence it is about to write) and its position within that sentence."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids, sent_of, pos = [bos], [0], [0]
    for j, s in enumerate(sentences):
        piece = tokenizer((" " if j else "") + s, add_special_tokens=False)["input_ids"]
        ids += piece
        sent_of += [j] * len(piece)
        pos += list(range(len(piece)))
    target = sent_of[1:] + sent_of[-1:]
    return {"input_ids": ids, "sentence_idx": target, "pos_in_sent": pos, "sent_emb": emb.tolist(),
            "actions": list(actions)}


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; labels -100 at padding; actions -1 for missing sentences."""
    s = max(len(r["actions"]) for r in rows)
    zero = [0.0] * len(rows[0]["sent_emb"][0])
    # through one numpy array: a tensor per row cost 7x more
    emb = torch.from_numpy(np.array([r["sent_emb"] + [zero] * (s - len(r["sent_emb"])) for r in rows],
                                    dtype=np.float32))

    def pad(key, value):
        return pad_sequences([r[key] for r in rows], value)

    return {"input_ids": pad("input_ids", pad_id), "labels": pad("input_ids", IGNORE_INDEX),
            "sentence_idx": pad("sentence_idx", 0), "pos_in_sent": pad("pos_in_sent", 0), "sent_emb": emb,
            "actions": pad("actions", -1)}


def batches(cfg: Config, data: PlanData, split: str = "test") -> list[dict]:
    """Evaluation batches on the CPU (`score` and `planner_metrics` move each to the model's device)."""
    pad_id = data.tokenizer.pad_token_id
    ds = data.rows[split]
    return [collate([ds[j] for j in range(i, min(i + cfg.eval_batch_size, len(ds)))], pad_id)
            for i in range(0, len(ds), cfg.eval_batch_size)]


def build_base(cfg: Config, data: PlanData, seed: int) -> ActionConditionedLM:
    """A fresh (or pretrained) LM, a fresh planner and the k-means codebook (one copy per conditioned layer)."""
    transformers.set_seed(seed)
    if cfg.model_name == "scratch":
        n_tok = max(len(r["input_ids"]) for split in data.rows.values() for r in split)
        lm = build_decoder(data.tokenizer, n_layer=cfg.n_layer, d_model=cfg.d_model, n_head=cfg.n_head,
                           max_len=n_tok + 1)
    else:
        lm, _ = load_pretrained(cfg.model_name)
    codebook = data.kmeans.cluster_centers_
    planner = SentencePlanner(codebook, ff_dim=cfg.planner_ff_dim)
    layers = list(range(cfg.cond_from_layer, lm.config.num_hidden_layers))
    if not layers:
        raise ConfigError("cond_from_layer", f"{cfg.cond_from_layer} leaves no layer of the "
                          f"{lm.config.num_hidden_layers}-layer LM to condition on the plan",
                          f"pass a value below {lm.config.num_hidden_layers}")
    return ActionConditionedLM(lm, planner, codebook, layers=layers, window=cfg.window,
                               adapter_init=cfg.adapter_init, tau=cfg.tau)


def _collate(data: PlanData):
    return lambda rows: collate(rows, data.tokenizer.pad_token_id)


def pretrain(cfg: Config, data: PlanData, seed: int) -> tuple[ActionConditionedLM, History]:
    """Stage 0: the plain LM (scratch models only) and the planner on the k-means actions; returns the model and
    the planner's history (accuracy on the test documents over training)."""
    base = build_base(cfg, data, seed)
    test = batches(cfg, data)
    scfg = replace(cfg, seed=seed)
    if cfg.lm_pretrain_steps:
        set_trainable(base, lm=True, planner=False)
        lm_args = TrainArgs.from_config(scfg, max_steps=cfg.lm_pretrain_steps, lr=cfg.lm_pretrain_lr,
                                        ckpt_every=cfg.lm_pretrain_steps, eval_every=cfg.lm_pretrain_steps)
        base = train(base, data.rows["train"], lm_args, collate_fn=_collate(data), step_fn=PlannerLMStep("none"),
                     name=f"lm_seed{seed}").model
    hist = History()
    if cfg.planner_steps:
        set_trainable(base, lm=False, planner=True)
        p_args = TrainArgs.from_config(scfg, max_steps=cfg.planner_steps, lr=cfg.planner_lr,
                                       weight_decay=cfg.planner_weight_decay,
                                       batch_size=cfg.planner_batch_size, ckpt_every=cfg.planner_steps,
                                       eval_every=max(1, cfg.planner_steps // 10))
        res = train(base.planner, data.rows["train"], p_args, collate_fn=_collate(data), step_fn=planner_step,
                    evaluate=lambda p: planner_metrics(p, test[0]), name=f"planner_seed{seed}")
        base.planner, hist = res.model, res.history
    return base.eval(), hist


def arm_names(cfg: Config) -> list[str]:
    """The configured arms (checked by the config) in ARMS order, with one `e2e_soft_r{r}` per mixing ratio in place
    of e2e_soft_mix."""
    out = []
    for a in (a for a in ARMS if a in cfg.arms):
        out += [f"e2e_soft_r{r:g}" for r in cfg.mix_ratios] if a == "e2e_soft_mix" else [a]
    return out


def arm_spec(arm: str) -> tuple[str, dict[str, str], bool, float]:
    if arm.startswith("e2e_soft_r"):
        return "soft", {arm: "soft"}, True, float(arm[len("e2e_soft_r"):])
    return (*ARM_SPECS[arm], 0.0)


def run_arm(arm: str, cfg: Config, data: PlanData, base: ActionConditionedLM, seed: int) -> ArmRun:
    """Stage 1 for one arm from a copy of `base` (the stage-0 model, or the trained model of the arm a pipeline arm
    follows); evaluated with predicted actions (and oracle ones). Every arm trains the adapters and codebooks (plus
    the planner end to end); `plain_continue` trains the base LM instead.
    A reloaded arm reports the `wall_s` measured when it trained (none if it was resumed midway)."""
    interface, evals, e2e, ratio = arm_spec(arm)
    model = copy.deepcopy(base)
    step = PlannerLMStep(interface, ratio, cfg.mix_schedule, cfg.max_steps, seed)
    plain = interface == "none"
    set_trainable(model, lm=plain, planner=e2e)
    groups = [ParamGroup(list(model.lm.parameters()) if plain else [*model.adapters.parameters(), *model.codebooks])]
    if e2e:
        groups.append(ParamGroup(list(model.planner.parameters()), lr=cfg.joint_planner_lr,
                                 weight_decay=cfg.planner_weight_decay))
    test = batches(cfg, data)
    t0 = time.perf_counter()
    res = train(model, data.rows["train"], TrainArgs.from_config(cfg, seed=seed), collate_fn=_collate(data),
                step_fn=step, param_groups=groups,
                evaluate=None if plain else lambda m: planner_metrics(m.planner, test[0]), name=f"{arm}_seed{seed}")
    wall = training_cost(cfg.run_dir, f"{arm}_seed{seed}", res.resumed_from, {"wall_s": time.perf_counter() - t0})
    model = res.model
    trainable = count_parameters(model, trainable_only=True)
    plan = {} if plain else planner_metrics(model.planner, test[0])
    oracle = {} if plain else {"ppl_oracle": score(model, test, "oracle")["ppl"]}
    rows = {}
    for row, iface in evals.items():
        s = score(model, test, iface)
        rows[row] = {"ppl": s["ppl"], **oracle, **plan, "trainable_params": trainable, **wall,
                     "nll_by_pos": s["nll_by_pos"]}
    if arm == "ora":
        s = score(model, test, "oracle")
        rows["oracle_eval"] = {"ppl": s["ppl"], "nll_by_pos": s["nll_by_pos"]}
    return ArmRun(arm, seed, model, res.history, results=rows, cost=wall, resumed_from=res.resumed_from)


@dataclass
class SeedRun:
    seed: int
    data: PlanData
    base: ActionConditionedLM
    planner_history: History
    arms: dict[str, ArmRun]
    plain: dict
    purity: float | None


def run_seed(cfg: Config, seed: int, tokenizer=None, data: PlanData | None = None) -> SeedRun:
    """Stage 0 and every arm at one seed, on `data` (default: `build_data` at that seed)."""
    scfg = replace(cfg, seed=seed)
    data = build_data(scfg, tokenizer) if data is None else data
    base, p_hist = pretrain(cfg, data, seed)
    test = batches(cfg, data)
    s = score(base, test, "none")
    plain = {"ppl": s["ppl"], "trainable_params": 0, "nll_by_pos": s["nll_by_pos"]}
    arms = {}
    for a in arm_names(cfg):  # in ARMS order: a pipeline arm comes after the arm it starts from
        arms[a] = run_arm(a, cfg, data, arms[PIPELINE[a]].model if a in PIPELINE else base, seed)
    purity = cluster_purity(data.train_actions, data.train_types) if data.train_types is not None else None
    return SeedRun(seed, data, base, p_hist, arms, plain, purity)


def run_experiment(cfg: Config, data: PlanData | None = None) -> dict[int, SeedRun]:
    """Every arm for seeds cfg.seed .. cfg.seed + n_seeds - 1. `data`: `build_data(cfg)` when the caller built it
    already (seed cfg.seed's corpus, actions and rows; not built twice)."""
    if data is not None:
        tokenizer = data.tokenizer
    else:
        tokenizer = None if cfg.model_name == "scratch" else load_pretrained(cfg.model_name)[1]
    return {s: run_seed(cfg, s, tokenizer, data if s == cfg.seed else None)
            for s in range(cfg.seed, cfg.seed + cfg.n_seeds)}


def cluster_purity(actions: np.ndarray, types: np.ndarray) -> float:
    """Fraction of sentences whose latent type is their cluster's majority type."""
    return float(sum(np.bincount(types[actions == c]).max() for c in np.unique(actions)) / len(actions))


def result_rows(run: SeedRun) -> dict[str, dict]:
    rows = {"plain": run.plain}
    for a in run.arms.values():
        rows.update(a.results)
    return rows


def summarize(runs: dict[int, SeedRun]) -> dict[str, dict[str, float]]:
    """results for metrics.json: per row the seed mean of every scalar (and `<metric>_std` over several seeds)."""
    return seed_summary([result_rows(r) for r in runs.values()])


CALIBRATION_SEEDS = (1, 2, 3)  # `seqnb calibrate` on tiny runs at these seeds set the margins; seed 0 checks them

# id -> (text, method, baseline, margin at the tiny preset; None: not resolved there, shown only). Other presets
# and corpora have no calibration: every claim is shown, none asserted.
CLAIMS = {
    "e2e_soft_beats_frozen_hard": ("End-to-end soft mixture beats the frozen planner's argmax (P2 over the P1 "
                                   "pipeline)", "e2e_soft", "frozen_hard", 0.05),
    "e2e_soft_beats_st": ("Soft mixture beats straight-through estimation", "e2e_soft", "e2e_st", 0.02),
    "planner_beats_plain": ("Toy: the planner-conditioned LM beats the plain LM (the planner sees a 6-token window "
                            "the plain LM's context does not summarise)", "e2e_soft", "plain", 0.07),
    "planner_beats_plain_continue": ("Toy: the planner-conditioned LM beats the plain LM fine-tuned for as many "
                                     "steps", "e2e_soft", "plain_continue", 0.05),
    "planner_beats_uniform_control": ("The planner beats a uniform mixture with the same parameters", "e2e_soft",
                                      "uniform", 0.07),
    "e2e_soft_beats_frozen_soft": ("Joint training helps beyond the soft interface alone (P2's own novelty)",
                                   "e2e_soft", "frozen_soft", 0.009),
    "exposure_bias": ("Training on oracle actions hurts when evaluated with predicted ones", "frozen_hard", "ora_pred",
                      5.0),
    "oracle_upper_bound": ("Oracle actions at evaluation (an upper bound, not a result) beat predicted ones",
                           "oracle_eval", "e2e_soft", 1.0),
    "pipeline_e2e_beats_pipeline_pred": ("In the papers' order (ORA -> PRED -> joint), joint training improves on "
                                         "P1's pipeline", "pipeline_e2e", "pipeline_pred", 0.07),
}


def claims(cfg: Config, results: dict) -> list[Claim]:
    """The papers' claims and our controls as checkable rules, for the arms that ran; oracle mixing adds one claim
    per ratio r (r = 0 beats r: our design, not the papers')."""
    rows = dict(CLAIMS)
    for r in cfg.mix_ratios:
        rows[f"oracle_mixing_r{r:g}"] = (f"End-to-end training without oracle mixing beats mixing at r = {r:g}",
                                         "e2e_soft", f"e2e_soft_r{r:g}", 0.06 if r == 0.5 else None)
    out = [Claim(id=id, text=text, metric="ppl", better="lower", baseline=baseline, method=method,
                 **({} if margin is None else dict(margin=margin, asserted=True, calibrated_on=CALIBRATION_SEEDS)))
           for id, (text, method, baseline, margin) in rows.items() if method in results and baseline in results]
    return out if cfg.preset == "tiny" and cfg.corpus == "plans" else [c.uncalibrated() for c in out]
