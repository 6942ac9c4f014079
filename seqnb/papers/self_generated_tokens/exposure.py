r"""Measuring exposure bias: greedy generation with a KV cache, per-position error and loss under gold and under
the model's own prefixes, accumulated error (Arora et al. 2022), recovery, and sequence distances.

For answer position t (1-based in the formulas, 0-based in code), over a fixed evaluation set:

    e_TF(t) = mean 1[argmax p(.|x, y_<t) != y_t]      e_FR(t) = mean 1[yhat_t != y_t],  yhat = greedy output
    NLL_TF(t) = -log p(y_t|x, y_<t)                    NLL_FR(t) = -log p(y_t|x, yhat_<t)
    AccErr(<=l) = sum_{t<=l} e_FR(t) - sum_{t<=l} e_TF(t)
    %ExErr(<=l) = 100 AccErr(<=l) / sum_{t<=l} e_TF(t)      ExShare(<=l) = 100 AccErr(<=l) / sum_{t<=l} e_FR(t)

With a reference that is still the right continuation after an own mistake (sorting: y_t depends on x and t
only), 1[yhat_t != y_t] is exactly "the next token is wrong given the own prefix".
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from seqnb.collate import pad_sequences
from seqnb.decoding import decode_tokens, greedy, restrict
from seqnb.runtime import model_device
from seqnb.papers.self_generated_tokens.method import collate, teacher_forced_predictions


def greedy_answers(model, prompts: list[list[int]], max_new: int, *, pad_id: int, eos_id: int | None = None,
                   allowed: torch.Tensor | None = None, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy continuation of every prompt (left-padded, KV cache), in eval mode. Returns tokens [N, max_new]
    (pad after EOS) and lengths [N] (EOS included). `allowed` restricts the argmax to answer tokens."""
    tokens, lengths = [], []
    for i in range(0, len(prompts), batch_size):
        out = decode_tokens(model, prompts[i: i + batch_size], max_new_tokens=max_new, pad_id=pad_id,
                            allowed=allowed, eos_id=eos_id)
        tokens.append(out.tokens.cpu())
        lengths.append(out.lengths.cpu())
    return torch.cat(tokens), torch.cat(lengths)


def teacher_forced_answers(model, rows: list[dict], *, pad_id: int, allowed: torch.Tensor | None = None,
                           batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row {prompt, answer}, argmax p(. | x, y_<t) at every answer position (the gold prefix; SS's pass one,
    `teacher_forced_predictions`, over every row), in eval mode: tokens [N, T] (pad beyond each answer) and
    lengths [N] (the answers')."""
    device = model_device(model)
    preds = [teacher_forced_predictions(model, collate(rows[i: i + batch_size], pad_id).to(device), allowed).cpu()
             for i in range(0, len(rows), batch_size)]
    lengths = torch.tensor([len(r["answer"]) for r in rows])
    T = int(lengths.max())
    pred = torch.cat([F.pad(p, (0, T - p.shape[1]), value=pad_id) for p in preds])
    return pred.masked_fill(torch.arange(T)[None] >= lengths[:, None], pad_id), lengths


@torch.no_grad()
def _score(model, rows: list[dict], targets: torch.Tensor, pad_id: int, allowed, batch_size: int):
    """For prompt + rows' answer as context: log p(target_a | prompt, answer_<a) and the argmax, [N, T]."""
    logp_all, pred_all = [], []
    for i in range(0, len(rows), batch_size):
        b = collate(rows[i: i + batch_size], pad_id).to(model_device(model))
        T = targets.shape[1]
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits.float()
        index = (b.ans_start[:, None] + torch.arange(T, device=logits.device) - 1).clamp(
            0, b.input_ids.shape[1] - 1)
        picked = logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]))
        tgt = targets[i: i + batch_size].to(logits.device)
        logp = F.log_softmax(picked, dim=-1).gather(-1, tgt.clamp(min=0)[..., None]).squeeze(-1)
        logp_all.append(logp.cpu())
        pred_all.append(greedy(restrict(picked, allowed)).cpu())
    return torch.cat(logp_all), torch.cat(pred_all)


def exposure(model, rows: list[dict], *, pad_id: int, eos_id: int | None = None,
             allowed: torch.Tensor | None = None, batch_size: int = 512) -> dict:
    """Exposure-bias measurement of `model` on rows {prompt, answer} (answer = reference ids, incl. EOS for
    text). Returns per-position curves (lists), scalars and the greedy generations (`y_hat`, `y_hat_len`)."""
    was_training = model.training
    model.eval()
    y = pad_sequences([r["answer"] for r in rows], pad_id)
    T = y.shape[1]
    y_len = torch.tensor([len(r["answer"]) for r in rows])
    valid = torch.arange(T)[None] < y_len[:, None]
    logp_tf, pred_tf = _score(model, rows, y, pad_id, allowed, batch_size)
    y_hat, y_hat_len = greedy_answers(model, [r["prompt"] for r in rows], T, pad_id=pad_id, eos_id=eos_id,
                                      allowed=allowed, batch_size=batch_size)
    own = [{"prompt": r["prompt"], "answer": y_hat[i, : max(int(y_hat_len[i]), 1)].tolist()}
           for i, r in enumerate(rows)]
    logp_fr, _ = _score(model, own, y, pad_id, allowed, batch_size)
    model.train(was_training)
    fr_defined = valid & (torch.arange(T)[None] <= y_hat_len[:, None])  # the own prefix yhat_<t exists
    err_tf = (pred_tf != y) & valid
    err_fr = ((y_hat != y) | (torch.arange(T)[None] >= y_hat_len[:, None])) & valid
    out = measures(err_tf, err_fr, valid)
    n = valid.sum(0).clamp(min=1)
    out["nll_tf"] = ((-logp_tf * valid).sum(0) / n).tolist()
    out["nll_fr"] = ((-logp_fr * fr_defined).sum(0) / fr_defined.sum(0).clamp(min=1)).tolist()
    out["em"] = float(((~err_fr).all(1) & (y_hat_len == y_len)).float().mean())
    out["y_hat"], out["y_hat_len"] = y_hat, y_hat_len
    return out


def measures(err_tf: torch.Tensor, err_fr: torch.Tensor, valid: torch.Tensor) -> dict:
    """Curves and scalars from per-token error indicators [N, T] under gold and own prefixes."""
    err_tf, err_fr, valid = err_tf & valid, err_fr & valid, valid
    n = valid.sum(0).clamp(min=1).float()
    e_tf, e_fr = err_tf.sum(0) / n, err_fr.sum(0) / n
    cum_tf, cum_fr = e_tf.cumsum(0), e_fr.cumsum(0)
    floor = 1.0 / valid.shape[0]  # one error's worth: keeps the ratios finite when the model makes none
    acc = cum_fr - cum_tf
    pct = 100 * acc / cum_tf.clamp(min=floor)
    share = 100 * acc / cum_fr.clamp(min=floor)
    prev_wrong = torch.zeros_like(err_fr)
    prev_wrong[:, 1:] = err_fr[:, :-1]
    any_before = torch.zeros_like(err_fr)
    any_before[:, 1:] = err_fr.cumsum(1)[:, :-1] > 0
    after_err = prev_wrong & valid
    dirty, clean = any_before & valid, ~any_before & valid
    return {
        "e_tf": e_tf.tolist(), "e_fr": e_fr.tolist(), "acc_err_curve": acc.tolist(), "pct_ex_curve": pct.tolist(),
        "tf_err": float(err_tf.sum() / valid.sum()), "fr_err": float(err_fr.sum() / valid.sum()),
        "tok_acc": float(1 - err_fr.sum() / valid.sum()),
        "acc_err": float(acc[-1]), "pct_ex": float(pct[-1]), "ex_share": float(share[-1]),
        "recovery_rate": float((~err_fr & after_err).sum() / after_err.sum().clamp(min=1)),
        "err_clean_prefix": float((err_fr & clean).sum() / clean.sum().clamp(min=1)),
        "err_after_error": float((err_fr & dirty).sum() / dirty.sum().clamp(min=1)),
    }


# ------------------------------------------------------------------------------------------ distances
def ngram_embedder(n: tuple[int, ...] = (1, 2, 3), dim: int = 4096) -> Callable[[list[str]], np.ndarray]:
    """Offline stand-in for a sentence embedder: hashed character n-gram counts (crc32, so stable across runs),
    L2-normalised. It sees which symbols occur and in which local order, nothing semantic."""

    def embed(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, s in enumerate(texts):
            for k in n:
                for j in range(len(s) - k + 1):
                    out[i, zlib.crc32(s[j: j + k].encode()) % dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    return embed


def embedding_distance(a: list[str], b: list[str], embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """1 - cos(E(a_i), E(b_i)) per pair (embeddings are L2-normalised)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} generations for {len(b)} references")
    return 1.0 - (embed(list(a)) * embed(list(b))).sum(1)
