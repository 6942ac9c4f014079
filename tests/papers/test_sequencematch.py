import random

import pytest
import torch

from seqnb.papers.sequencematch.backspace import (
    additive_mask, apply_backspaces, backspace_inputs, collate_actions, generate_with_backspace,
    insert_backspace_noise,
)
from seqnb.papers.sequencematch.method import bc_loss, sm_terms, soft_values
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
