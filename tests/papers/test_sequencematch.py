import dataclasses
import random
from types import SimpleNamespace

import pytest
import torch

from seqnb.papers.sequencematch.backspace import (
    ActionBatch, additive_mask, apply_backspaces, backspace_inputs, collate_actions, generate_with_backspace,
    insert_backspace_noise,
)
from seqnb.papers.sequencematch.method import SequenceMatchStep, bc_loss, sm_terms, soft_values
from seqnb.models import add_special_tokens, build_decoder

B = 99  # a backspace id for the pure-list tests


def test_apply_backspaces_edge_cases():
    # prompt "^ 1 + 2 =": two backspaces at the boundary are no-ops, one real one deletes "3"
    assert apply_backspaces([0, 1, 2, 3, 4, B, B, 5, B, 6], 5, B) == [0, 1, 2, 3, 4, 6]
    assert apply_backspaces([], 0, B) == []
    assert apply_backspaces([7, 1, 2, 3, B, B, B, 4], 1, B) == [7, 4]
    assert apply_backspaces([7, 1, 2, B, 3], 1, B) == [7, 1, 3]


def test_noise_with_p_one_precedes_every_target_and_edits_back():
    rng = random.Random(0)
    prompt, target = [0, 1, 2], [5, 6, 7, 3]
    actions, noise = insert_backspace_noise(prompt, target, p_noise=1.0, bksp_id=B,
                                            wrong_tokens=lambda edited, gold: [4, 5, 6, 7, 8], rng=rng)
    assert len(actions) == 3 + 3 * 4 and actions[4::3] == [B] * 4
    assert [actions[i] for i in range(len(actions)) if noise[i]] == actions[3::3]
    assert all(w != g for w, g in zip(actions[3::3], target))
    assert apply_backspaces(actions, 3, B) == prompt + target
    clean, flags = insert_backspace_noise(prompt, target, p_noise=0.0, bksp_id=B,
                                          wrong_tokens=lambda e, g: [4], rng=rng)
    assert clean == prompt + target and not any(flags)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_parallel_backspace_logits_equal_literal_edits(char_tok, attn):
    torch.manual_seed(0)
    (bksp,) = [len(char_tok)]
    model = build_decoder(char_tok, n_layer=2, d_model=32, n_head=2, max_len=64)
    add_special_tokens(model, char_tok, ["<bksp>"])
    model.set_attn_implementation(attn)
    model.eval()
    rng = random.Random(1)
    rows = []
    for _ in range(32):
        p = rng.randint(1, 4)
        acts = [char_tok.bos_token_id] + [rng.randint(4, 15) for _ in range(p - 1)]
        acts += [bksp if rng.random() < 0.4 else rng.randint(4, 15) for _ in range(rng.randint(1, 14))]
        rows.append({"actions": acts, "prompt_len": p})
    batch = collate_actions(rows, bksp_id=bksp, pad_id=char_tok.pad_token_id)
    with torch.no_grad():
        parallel = batch.forward(model)
        worst = 0.0
        for i, r in enumerate(rows):
            for t in range(len(r["actions"])):
                edited = apply_backspaces(r["actions"][: t + 1], r["prompt_len"], bksp)
                literal = model(input_ids=torch.tensor([edited])).logits[0, -1]
                worst = max(worst, (literal - parallel[i, t]).abs().max().item())
    assert worst < 1e-5


def test_backspace_inputs_copy_rows():
    ids, pos, attend = backspace_inputs([0, 1, 2, B, B, 3], 1, B)
    assert ids.tolist() == [0, 1, 2, 1, 0, 3] and pos.tolist() == [0, 1, 2, 1, 0, 1]
    assert attend[4].tolist() == [True, False, False, False, False, False]
    assert attend[5].tolist() == [True, False, False, False, False, True]
    mask = additive_mask(attend[None], torch.float32)
    assert mask.shape == (1, 1, 6, 6) and mask[0, 0, 5, 0] == 0 and mask[0, 0, 5, 1] == torch.finfo(torch.float32).min


def toy():
    """Spec's 2-step MDP: actions {x=0, y=1, EOS=2}; a one-token prompt (id 0) whose row is s0."""
    data_logits = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]])
    pol_logits = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    data_actions, pol_actions = torch.tensor([[0, 0, 2]]), torch.tensor([[0, 1, 2]])
    transition = torch.tensor([[True, True, False]])
    return data_logits, data_actions, pol_logits, pol_actions, transition


def test_sm_loss_matches_hand_computation():
    dl, da, pl, pa, tr = toy()
    allowed = torch.ones(3, dtype=torch.bool)
    r_d, v_d = soft_values(dl, da, tr, eos_id=2, gamma=0.9, allowed=allowed)
    r_p, v_p = soft_values(pl, pa, tr, eos_id=2, gamma=0.9, allowed=allowed)
    assert r_d[0].tolist() == pytest.approx([-1.01559, 2.0], abs=1e-5)
    assert v_d[0].tolist() == pytest.approx([-0.60798, 2.23954], abs=1e-5)
    assert r_p[0].tolist() == pytest.approx([-1.39630, 0.0], abs=1e-5)
    assert v_p[0].tolist() == pytest.approx([0.01131, 1.55144], abs=1e-5)
    valid, none = tr[:, :-1], torch.zeros(1, 2, dtype=torch.bool)
    terms = sm_terms(r_d, v_d, valid, none, r_p, v_p, valid, alpha=0.5, lam=0.5)
    assert terms.expert.item() == pytest.approx(-0.492205, abs=1e-5)
    assert terms.value.item() == pytest.approx(0.798578, abs=1e-5)
    assert terms.chi2.item() == pytest.approx(0.872635, abs=1e-5)
    assert terms.total.item() == pytest.approx(1.179008, abs=1e-5)


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.5])
def test_sm_reduces_to_mle_with_lam_one_and_no_chi2(gamma):
    dl, da, pl, pa, tr = toy()
    allowed = torch.ones(3, dtype=torch.bool)
    r_d, v_d = soft_values(dl, da, tr, 2, gamma, allowed)
    r_p, v_p = soft_values(pl, pa, tr, 2, gamma, allowed)
    valid, none = tr[:, :-1], torch.zeros(1, 2, dtype=torch.bool)
    terms = sm_terms(r_d, v_d, valid, none, r_p, v_p, valid, alpha=1e12, lam=1.0)
    assert terms.total.item() == pytest.approx(0.323575, abs=1e-5)


def test_noise_tokens_are_not_bc_targets_and_count_as_value_in_expert_term():
    batch = collate_actions([{"actions": [0, 5, B, 6, 2], "prompt_len": 1, "noise": [False, True, False, False, False]}],
                            bksp_id=B, pad_id=1)
    logits = torch.randn(1, 5, 100)
    logp = torch.log_softmax(logits, -1)[0]
    expected = -(logp[1, B] + logp[2, 6] + logp[3, 2]) / 3  # the wrong token 5 is never a target
    assert bc_loss(logits, batch).item() == pytest.approx(expected.item(), rel=1e-5)
    allowed = torch.ones(100, dtype=torch.bool)
    r, v = soft_values(logits, batch.actions, batch.transition, 2, 1.0, allowed)
    valid, noise = batch.transition[:, :-1], batch.noise[:, 1:]
    terms = sm_terms(r, v, valid, noise, r, v, valid, alpha=1e12, lam=1.0)
    # noise transitions enter the expert term through v, so expert + value telescope to BC exactly
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_generation_applies_backspaces_and_forced_errors(char_tok):
    torch.manual_seed(0)
    model = build_decoder(char_tok, n_layer=1, d_model=32, n_head=2, max_len=64)
    (bksp,) = add_special_tokens(model, char_tok, ["<bksp>"])
    allowed = torch.zeros(len(char_tok), dtype=torch.bool)
    allowed[[bksp, char_tok.eos_token_id] + list(range(4, 15))] = True
    prompt = char_tok("12=")["input_ids"]
    d7 = char_tok.convert_tokens_to_ids("7")
    traces = generate_with_backspace(model, [prompt, prompt], bksp_id=bksp, eos_id=char_tok.eos_token_id,
                                     pad_id=char_tok.pad_token_id, allowed=allowed, max_actions=6,
                                     force=[[bksp, d7, bksp], [d7]])
    first, second = traces
    assert first.actions[len(prompt) : len(prompt) + 3] == [bksp, d7, bksp]
    assert first.edited[: len(prompt)] == prompt  # the no-op backspace kept the prompt
    for t in traces:
        assert t.edited == apply_backspaces(t.actions, t.prompt_len, bksp)
        assert t.ended == (t.actions[-1] == char_tok.eos_token_id) and len(t.actions) - t.prompt_len <= 6
    assert second.actions[len(prompt)] == d7 and second.n_forced == 1


# --- The full SequenceMatchStep against a hand computation (issue 19) -----------------------------------------
# A toy vocabulary: two prompt-only symbols, three answer tokens, EOS, <bksp> and PAD. The action set (what
# generation samples from and the loss's logsumexp runs over) leaves out the prompt symbols and PAD.
HAT, TA, TB, TC, EOS, BKSP, PAD, EQ = range(8)
N_VOCAB = 8
ACTION_SET = [TA, TB, TC, EOS, BKSP]
F, T = False, True

# data (lam's share): backspace-augmented demonstrations of different lengths, so row 1 is padded by 4 columns
DATA_ROWS = [
    # prompt ^ a =, answer b c: a mistake "a" (noise, the environment's) undone by <bksp> before c
    {"actions": [HAT, TA, EQ, TB, TA, BKSP, TC, EOS], "prompt_len": 3, "noise": [F, F, F, F, T, F, F, F]},
    {"actions": [HAT, EQ, TC, EOS], "prompt_len": 2},
]
# the model's own rollouts (1 - lam's share), fixed here instead of sampled
POL_ROWS = [
    # a no-op <bksp> at the prompt boundary, a <bksp> that deletes c, another no-op, then b and EOS
    {"actions": [HAT, TA, EQ, BKSP, TC, BKSP, BKSP, TB, EOS], "prompt_len": 3},
    # cut at the action cap (no EOS): not terminal, so its last transition bootstraps V of the last state
    {"actions": [HAT, EQ, TB, TA], "prompt_len": 2},
]


class StateLogits(torch.nn.Module):
    """A stand-in causal LM whose logits are a fixed function of the state it sees, the edited prefix s:
    l(s) = W[last token of s] + P[its position] + sum over tokens x of s of U[x]. Like a transformer it reads the
    state only through input_ids, position_ids and the 4-D additive mask, so backspace copy rows, the mask
    and padding rows all go through the same path as with a real model."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)

        def table(rows):  # multiples of 1/4 in [-1.5, 1.5]
            return torch.nn.Parameter(torch.randint(-6, 7, (rows, N_VOCAB), generator=g).float() / 4)

        self.W, self.U, self.P = table(N_VOCAB), table(N_VOCAB), table(16)
        with torch.no_grad():
            self.W[:, HAT] += 2.0  # a large logit outside the action set: V over all tokens would differ
            self.W[PAD] += torch.arange(N_VOCAB) - 2.0  # padding rows' logits are far from any real row's

    def forward(self, input_ids, position_ids, attention_mask):
        visible = (attention_mask[:, 0] == 0).float()  # [B, T, T] the keys each row sees
        logits = self.W[input_ids] + self.P[position_ids] + visible @ self.U[input_ids]
        return SimpleNamespace(logits=logits)

    def state_logits(self, edited: list[int]) -> torch.Tensor:
        """The same logits computed from the literal edited prefix (no batch, no mask)."""
        return self.W[edited[-1]] + self.P[len(edited) - 1] + self.U[edited].sum(0)


def edit(actions, prompt_len):
    """The surviving tokens after `actions` (written out again here, independently of `apply_backspaces`)."""
    out = []
    for i, a in enumerate(actions):
        if i >= prompt_len and a == BKSP:
            if len(out) > prompt_len:  # never deletes the prompt: at the boundary a no-op
                out.pop()
        else:
            out.append(a)
    return out


def hand_transitions(model, rows, gamma):
    """Per transition (s_t, a_{t+1}, s_{t+1}) of every row, t from the prompt's last token to the row's last
    state, in float64: (r, v, noise flag of a_{t+1}, BC NLL of a_{t+1})."""
    out = []
    for row in rows:
        acts, p = row["actions"], row["prompt_len"]
        noise = row.get("noise") or [False] * len(acts)
        for t in range(p - 1, len(acts) - 1):  # padding never appears: these are the unpadded rows
            s, a, s_next = edit(acts[: t + 1], p), acts[t + 1], edit(acts[: t + 2], p)
            l = model.state_logits(s).double()
            V = torch.logsumexp(l[ACTION_SET], 0)  # V(s) = logsumexp over the action set only
            # V(s') = logsumexp l(.|s'), 0 after EOS (terminal); a rollout cut without EOS bootstraps
            V_next = 0.0 if a == EOS else torch.logsumexp(model.state_logits(s_next).double()[ACTION_SET], 0)
            r = l[a] - gamma * V_next  # r = Q(s, a) - gamma V(s'), Q(s, a) = the raw logit l(a|s)
            v = V - gamma * V_next  # v = V(s) - gamma V(s')
            nll = -(l[a] - torch.logsumexp(l, 0))  # BC: token NLL, softmax over the whole vocabulary
            out.append((r, v, noise[t + 1], nll))
    return out


def hand_loss(model, *, beta, alpha, gamma, lam):
    D = hand_transitions(model, DATA_ROWS, gamma)
    P = hand_transitions(model, POL_ROWS, gamma)
    n_expert = sum(1 for _, _, noisy, _ in D if not noisy)  # data transitions whose action is the expert's
    # expert term: - sum_D r*, r* = v on an inserted mistake (no credit for choosing it), r elsewhere; / n_expert
    expert = -sum(v if noisy else r for r, v, noisy, _ in D) / n_expert
    # value term: lam * sum_D v / n_expert + (1 - lam) * mean_P v   (every data transition, noise included)
    value = lam * sum(v for _, v, _, _ in D) / n_expert + (1 - lam) * sum(v for _, v, _, _ in P) / len(P)
    # chi^2 term: (lam * mean_D r^2 + (1 - lam) * mean_P r^2) / (4 alpha)   (data r, not r*, on mistakes too)
    chi2 = (lam * sum(r**2 for r, _, _, _ in D) / len(D) + (1 - lam) * sum(r**2 for r, _, _, _ in P) / len(P)) / (
        4 * alpha)
    # L_BC = mean NLL over the expert's data actions (the mistakes are never targets)
    bc = sum(nll for _, _, noisy, nll in D if not noisy) / n_expert
    loss = (1 - beta) * bc + beta * (expert + value + chi2)
    return loss, {"bc": bc, "sm_expert": expert, "sm_value": value, "sm_chi2": chi2}


def widen(batch: ActionBatch, k: int) -> ActionBatch:
    """The batch with k more padding columns (padding rows attend only to themselves, as collate pads)."""
    b, width = batch.input_ids.shape
    attend = torch.eye(width + k, dtype=torch.bool).repeat(b, 1, 1)
    attend[:, :width, :width] = batch.attend

    def pad(x, value):
        return torch.cat([x, torch.full((b, k), value, dtype=x.dtype)], 1)

    return ActionBatch(pad(batch.input_ids, PAD), pad(batch.position_ids, 0), attend, pad(batch.actions, PAD),
                       pad(batch.noise, False), pad(batch.transition, False))


def sm_case(**hyper):
    model = StateLogits()
    data = collate_actions(DATA_ROWS, bksp_id=BKSP, pad_id=PAD)
    pol = collate_actions(POL_ROWS, bksp_id=BKSP, pad_id=PAD)
    allowed = torch.zeros(N_VOCAB, dtype=torch.bool)
    allowed[ACTION_SET] = True
    step = SequenceMatchStep(rollouts=lambda: pol, eos_id=EOS, allowed=allowed, **hyper)
    return model, data, pol, step


CASES = [  # lam != 1/2 and beta != 1/2, so swapping data/rollout weights or BC/SM weights shows
    dict(beta=0.3, alpha=0.8, gamma=0.9, lam=0.7),
    dict(beta=0.6, alpha=2.0, gamma=0.5, lam=0.25),
    dict(beta=1.0, alpha=0.5, gamma=1.0, lam=0.5),
]


@pytest.mark.parametrize("hyper", CASES, ids=lambda h: f"gamma{h['gamma']}-lam{h['lam']}")
def test_sequencematch_step_matches_hand_computation(hyper):
    model, data, pol, step = sm_case(**hyper)
    assert data.input_ids.shape == (2, 8) and pol.input_ids.shape == (2, 9)  # rows padded by 4 and 5 columns
    loss, logs = step(model, data, 0)
    expected, terms = hand_loss(model, **hyper)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert logs["loss"].item() == pytest.approx(expected.item(), abs=1e-5)
    for name, value in terms.items():
        assert logs[name].item() == pytest.approx(value.item(), abs=1e-5), name
    # the gradient too: the step's loss and the hand formula are the same function of the model's tables
    loss.backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected.backward()
    for g, e in zip(got, (p.grad for p in model.parameters())):
        assert torch.allclose(g, e.float(), atol=1e-5)


PINNED = [6.437417, 5.136022, 2.850622, 0.813926, 5.809455]  # loss, bc, expert, value, chi2 of CASES[0]


def test_sequencematch_step_pinned_value():
    """The hand computation's numbers for the first case, so that it and the step cannot drift together."""
    model, data, _, step = sm_case(**CASES[0])
    loss, logs = step(model, data, 0)
    got = [logs[k].item() for k in ("loss", "bc", "sm_expert", "sm_value", "sm_chi2")]
    assert got == pytest.approx(PINNED, abs=1e-4)


def test_sequencematch_case_discriminates_discount_and_padding():
    """The hand case is one where intermediate states matter at gamma < 1, and where padding would count."""
    model, data, pol, step = sm_case(**CASES[0])
    loss, _ = step(model, data, 0)
    # sum_t v_t telescopes to V(s_first) - (1 - done) V(s_last) per row only at gamma = 1 (backspaces included);
    # at gamma = 0.9 the intermediate states' values stay in it, so a telescoped shortcut would be caught
    def V(edited):
        return model.state_logits(edited).double()[ACTION_SET].logsumexp(0).item()

    def telescoped(row):
        acts, p = row["actions"], row["prompt_len"]
        return V(edit(acts[:p], p)) - (0.0 if acts[-1] == EOS else V(edit(acts, p)))

    rows = DATA_ROWS + POL_ROWS
    shortcut = sum(telescoped(row) for row in rows)
    per_step = {g: sum(v.item() for _, v, _, _ in hand_transitions(model, rows, g)) for g in (1.0, 0.9)}
    assert per_step[1.0] == pytest.approx(shortcut, abs=1e-9) and abs(per_step[0.9] - shortcut) > 0.5
    # extra padding columns change nothing, although the stub's padding rows have logits unlike any real row's
    wide_pol = widen(pol, 3)
    wide_step = SequenceMatchStep(rollouts=lambda: wide_pol, eos_id=EOS, allowed=step.allowed, beta=step.beta,
                                  alpha=step.alpha, gamma=step.gamma, lam=step.lam)
    wide_loss, _ = wide_step(model, widen(data, 2), 0)
    assert wide_loss.item() == pytest.approx(loss.item(), abs=1e-6)
    # ... and counting one padded position (row 1's last state followed by a PAD "action") would show
    leaky = dataclasses.replace(data, transition=data.transition.index_put((torch.tensor([1]), torch.tensor([3])),
                                                                            torch.tensor(True)))
    assert abs(step(model, leaky, 0)[0].item() - loss.item()) > 0.05
