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

from seqnb.runtime import model_device
from seqnb.papers.self_generated_tokens.method import argmax_tokens, collate


@torch.no_grad()
def greedy_answers(model, prompts: list[list[int]], max_new: int, *, pad_id: int, eos_id: int | None = None,
                   allowed: torch.Tensor | None = None, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy continuation of every prompt (left-padded, KV cache), in eval mode. Returns tokens [N, max_new]
    (pad after EOS) and lengths [N] (EOS included). `allowed` restricts the argmax to answer tokens."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    out, lens = [], []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i: i + batch_size]
        P = max(map(len, chunk))
        ids = torch.full((len(chunk), P), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), P), dtype=torch.long)
        for r, p in enumerate(chunk):
            ids[r, P - len(p):], mask[r, P - len(p):] = torch.tensor(p), 1
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        done = torch.zeros(len(chunk), dtype=torch.bool, device=device)
        length = torch.full((len(chunk),), max_new, dtype=torch.long, device=device)
        tokens = []
        for t in range(max_new):
            nxt = argmax_tokens(res.logits[:, -1].float(), allowed)
            nxt = torch.where(done, pad_id, nxt)
            tokens.append(nxt)
            if eos_id is not None:
                ended = (nxt == eos_id) & ~done
                length = torch.where(ended, t + 1, length)
                done |= ended
                if done.all():
                    break
            if t + 1 < max_new:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                pos = pos[:, -1:] + 1
                res = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                            past_key_values=res.past_key_values, use_cache=True)
        gen = torch.stack(tokens, dim=1)
        if gen.shape[1] < max_new:
            gen = torch.cat([gen, torch.full((len(chunk), max_new - gen.shape[1]), pad_id, device=device)], dim=1)
        out.append(gen.cpu())
        lens.append(length.cpu())
    model.train(was_training)
    return torch.cat(out), torch.cat(lens)


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
        pred_all.append(argmax_tokens(picked, allowed).cpu())
    return torch.cat(logp_all), torch.cat(pred_all)


def exposure(model, rows: list[dict], *, pad_id: int, eos_id: int | None = None,
             allowed: torch.Tensor | None = None, batch_size: int = 512) -> dict:
    """Exposure-bias measurement of `model` on rows {prompt, answer} (answer = reference ids, incl. EOS for
    text). Returns per-position curves (lists), scalars and the greedy generations (`y_hat`, `y_hat_len`)."""
    was_training = model.training
    model.eval()
    T = max(len(r["answer"]) for r in rows)
    y = torch.full((len(rows), T), pad_id, dtype=torch.long)
    y_len = torch.tensor([len(r["answer"]) for r in rows])
    for i, r in enumerate(rows):
        y[i, : len(r["answer"])] = torch.tensor(r["answer"])
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
def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences (tokens or characters)."""
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        prev = cur
    return prev[-1]


def normalized_edit_distance(a, b) -> float:
    return edit_distance(a, b) / max(len(a), len(b), 1)


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
