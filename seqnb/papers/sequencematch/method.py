r"""SequenceMatch (Cundy & Ermon, ICLR 2024, arXiv 2306.05426): imitation learning with a `<bksp>` action.

The logits act as a soft Q-function (IQ-Learn, Garg et al. 2021), so the loss needs no discriminator and no
policy gradient, only samples from the model. For the row of state s with logits l(.|s) over the allowed
actions, and s' the state after action a:

    Q(s, a) = l(a|s)      V(s) = logsumexp_a l(a|s)      r = Q(s, a) - gamma (1 - done) V(s')

The chi^2-mixture loss as we read the paper (reconstructed from IQ-Learn's online "value" variant with its
chi^2 regulariser on data and model samples; the paper's own equations could not be read), with D = data
transitions (backspace-augmented), P = transitions of the model's own rollouts, v = V(s) - gamma V(s'):

    L_SM = - E_D[r*] + lam E_D[v] + (1 - lam) E_P[v] + (lam E_D[r^2] + (1 - lam) E_P[r^2]) / (4 alpha)

where r* replaces r by v on inserted noise tokens (the environment's perturbation, not the expert's choice).
Training mixes it with behaviour cloning: L = (1 - beta) L_BC + beta L_SM. With lam = 1 and alpha -> inf the
loss reduces to the token NLL when every token is an allowed action (a test checks this limit; L_BC's softmax runs
over the whole vocabulary, the soft values over the allowed actions only).

Taught in notebooks/03_sequencematch.ipynb, § "The loss, as computed from logits".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from seqnb.papers.sequencematch.backspace import ActionBatch


@dataclass(frozen=True)
class SMTerms:
    expert: torch.Tensor
    value: torch.Tensor
    chi2: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.expert + self.value + self.chi2


def soft_values(logits: torch.Tensor, actions: torch.Tensor, transition: torch.Tensor, eos_id: int,
                gamma: float, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Implicit rewards r and value differences v for every transition (row t -> action t+1), shape [B, T-1].

    logits [B, T, V] (raw, never log-softmaxed: the loss is not shift-invariant); the logsumexp runs over
    the `allowed` actions only, the same set generation samples from.
    """
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    # V(s_t) = logsumexp_{a allowed} l(a | s_t)
    v_all = torch.logsumexp(logits, dim=-1)  # [B, T]
    nxt = actions[:, 1:]
    # Q(s_t, a_{t+1}) = l(a_{t+1} | s_t)
    q = logits[:, :-1].gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
    # gamma (1 - done) V(s_{t+1}): nothing follows <eos>
    done = (nxt == eos_id).float()
    v_next = gamma * (1 - done) * v_all[:, 1:]
    valid = transition[:, :-1]
    # r_t = Q(s_t, a_{t+1}) - gamma (1 - done) V(s_{t+1})
    r = torch.where(valid, q - v_next, 0.0)
    # v_t = V(s_t) - gamma (1 - done) V(s_{t+1})
    v = torch.where(valid, v_all[:, :-1] - v_next, 0.0)
    return r, v


def sm_terms(data_r: torch.Tensor, data_v: torch.Tensor, data_valid: torch.Tensor, data_noise: torch.Tensor,
             pol_r: torch.Tensor, pol_v: torch.Tensor, pol_valid: torch.Tensor, *, alpha: float, lam: float) -> SMTerms:
    """The three terms of L_SM from per-transition r and v (masks are [B, T-1] bool; noise flags the action).

    Data sums in the expert and value terms are both divided by the number of expert (non-noise) transitions
    (our normalisation), so that with lam = 1 and alpha -> inf they telescope to exactly the BC loss.
    """
    n_expert = (data_valid & ~data_noise).sum().clamp(min=1)
    # r*_t = v_t on an inserted mistake (the environment chose that action, not the expert), else r_t
    r_star = torch.where(data_noise, data_v, data_r)
    # - E_D[r*]
    expert = -(r_star * data_valid).sum() / n_expert
    # lam E_D[v] + (1 - lam) E_P[v]; with gamma = 1, sum_t v_t telescopes to V(s_0) - V(s_last) along a trajectory
    value = lam * (data_v * data_valid).sum() / n_expert + (1 - lam) * _mean(pol_v, pol_valid)
    # (lam E_D[r^2] + (1 - lam) E_P[r^2]) / (4 alpha): the chi^2 regulariser, on data and on the model's samples
    chi2 = (lam * _mean(data_r**2, data_valid) + (1 - lam) * _mean(pol_r**2, pol_valid)) / (4 * alpha)
    return SMTerms(expert, value, chi2)


def bc_loss(logits: torch.Tensor, batch: ActionBatch) -> torch.Tensor:
    """Token NLL of every non-noise action given its (edited) state: behaviour cloning on augmented data."""
    # L_BC = - E_D[log pi(a_{t+1} | s_t)] over the expert's actions (not the inserted mistakes)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, batch.actions[:, 1:].unsqueeze(-1)).squeeze(-1)
    targets = batch.transition[:, :-1] & ~batch.noise[:, 1:]
    return _mean(nll, targets)


def _mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class SequenceMatchStep:
    """`step_fn` for `seqnb.train.train`: (1 - beta) BC + beta L_SM on a data batch and a rollout batch.

    `rollouts()` returns an `ActionBatch` of the model's own generations (refreshed by a training callback).

    Example::

        import random
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from seqnb.models import add_special_tokens
        from seqnb.papers.sequencematch.backspace import (collate_actions, generate_with_backspace,
                                                          insert_backspace_noise)
        from seqnb.papers.sequencematch.method import SequenceMatchStep

        model = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M", dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M")
        (bksp,), eos = add_special_tokens(model, tokenizer, ["<bksp>"]), tokenizer.eos_token_id
        allowed = torch.ones(len(tokenizer), dtype=torch.bool)  # the action set: every token, <bksp> included
        prompts, answers = tokenizer(["2+3=", "4+4="]).input_ids, tokenizer(["5", "8"]).input_ids
        rng, digits = random.Random(0), tokenizer("0123456789").input_ids  # before each token: a wrong digit, <bksp>
        rows = [dict(zip(("actions", "noise"), insert_backspace_noise(p, y + [eos], p_noise=1.0, bksp_id=bksp, rng=rng,
                     wrong_tokens=lambda edited, gold: digits)), prompt_len=len(p)) for p, y in zip(prompts, answers)]
        data = collate_actions(rows, bksp_id=bksp, pad_id=eos)
        traces = generate_with_backspace(model, prompts, bksp_id=bksp, eos_id=eos, pad_id=eos, allowed=allowed,
                                         max_actions=6, temperature=1.0)  # the model's own rollouts
        rollouts = collate_actions([vars(t) for t in traces], bksp_id=bksp, pad_id=eos)
        step = SequenceMatchStep(lambda: rollouts, eos, allowed, beta=0.5, alpha=1.0, gamma=0.99, lam=0.5)
        loss, logs = step(model, data, 0)
        loss.backward()
    """

    rollouts: Callable[[], ActionBatch]
    eos_id: int
    allowed: torch.Tensor
    beta: float
    alpha: float
    gamma: float
    lam: float

    def __call__(self, model, data: ActionBatch, step: int):
        pol = self.rollouts().to(data.input_ids.device)
        bc, terms = self.parts(data.forward(model), pol.forward(model), data, pol)
        # L = (1 - beta) L_BC + beta L_SM
        loss = (1 - self.beta) * bc + self.beta * terms.total
        logs = {"loss": loss.detach(), "bc": bc.detach(), "sm_expert": terms.expert.detach(),
                "sm_value": terms.value.detach(), "sm_chi2": terms.chi2.detach()}
        return loss, logs

    def parts(self, logits_d: torch.Tensor, logits_p: torch.Tensor, data: ActionBatch,
              pol: ActionBatch) -> tuple[torch.Tensor, SMTerms]:
        """L_BC and the terms of L_SM from the logits of the data batch and of the rollout batch."""
        allowed = self.allowed.to(logits_d.device)
        r_d, v_d = soft_values(logits_d, data.actions, data.transition, self.eos_id, self.gamma, allowed)
        r_p, v_p = soft_values(logits_p, pol.actions, pol.transition, self.eos_id, self.gamma, allowed)
        terms = sm_terms(r_d, v_d, data.transition[:, :-1], data.noise[:, 1:], r_p, v_p, pol.transition[:, :-1],
                         alpha=self.alpha, lam=self.lam)
        return bc_loss(logits_d, data), terms

    def rollout_gradients(self, model, data: ActionBatch) -> dict[str, dict[str, float]]:
        """Where each weighted term of the loss pushes the model's own rollout states: the root-mean-square norm
        of its gradient with respect to the logits of a state, over the first state of each rollout (the last
        prompt token), its intermediate states and its last state. {term: {"first", "intermediate", "last"}}."""
        pol = self.rollouts().to(data.input_ids.device)
        with torch.no_grad():
            logits_d, logits_p = data.forward(model).float(), pol.forward(model).float()
        logits_p.requires_grad_(True)
        bc, terms = self.parts(logits_d, logits_p, data, pol)
        weighted = {"bc": (1 - self.beta) * bc, "expert": self.beta * terms.expert,
                    "value": self.beta * terms.value, "chi2": self.beta * terms.chi2}
        states = pol.transition.clone()
        first = states & ~torch.cat([torch.zeros_like(states[:, :1]), states[:, :-1]], 1)
        last = states & ~torch.cat([states[:, 1:], torch.zeros_like(states[:, :1])], 1)
        where = {"first": first, "intermediate": states & ~first & ~last, "last": last & ~first}
        out = {}
        for name, term in weighted.items():
            grad = torch.autograd.grad(term, logits_p, retain_graph=True, allow_unused=True)[0] \
                if term.requires_grad else None  # L_BC reads the data batch only
            norms = torch.zeros(states.shape) if grad is None else grad.norm(dim=-1).cpu()
            out[name] = {k: float(norms[m.cpu()].square().mean().sqrt()) if m.any() else float("nan")
                         for k, m in where.items()}
        return out


def bc_step(model, data: ActionBatch, step: int):
    """Behaviour cloning on backspace-augmented data (the BC+bksp baseline)."""
    loss = bc_loss(data.forward(model), data)
    return loss, {"loss": loss.detach(), "bc": loss.detach()}
