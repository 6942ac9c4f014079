"""Notebook 04 (self-generated tokens): schedules, token mixing, RAC targets, exposure-bias measurement, cost."""

import math

import pytest
import torch

from seqnb.collate import IGNORE_INDEX, pad_sequences
from seqnb.config import ConfigError
from seqnb.decoding import greedy, restrict
from seqnb.metrics import edit_distance
from seqnb.papers import resolve_config
from seqnb.papers.self_generated_tokens import method as sg
from seqnb.papers.self_generated_tokens import experiment as ex
from seqnb.papers.self_generated_tokens.exposure import (
    embedding_distance, exposure, greedy_answers, measures, ngram_embedder,
)
from seqnb.tokenizers import char_tokenizer

TOK = char_tokenizer("0123456789=")
DIGIT = {d: TOK.convert_tokens_to_ids(d) for d in "0123456789="}
ID2DIGIT = {v: k for k, v in DIGIT.items()}


# ------------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("name, values", [
    ("linear", (0.0, 0.25, 0.5)),  # p_max = 0.5
    ("invsigmoid", (0.5 * 0.0066929, 0.25, 0.5 * 0.9933071)),
    ("exp", (0.0, 0.5 * 0.7763932, 0.5 * 0.95)),
    ("const", (0.5, 0.5, 0.5)),
])
def test_schedule_values_at_known_progress(name, values):
    for u, want in zip((0.0, 0.5, 1.0), values):
        assert sg.schedule(name, u, p_max=0.5) == pytest.approx(want, abs=1e-6)


def test_epsilon_is_zero_during_warmup_then_monotone_to_p_max():
    eps = [sg.epsilon(s, start=32, total=192, name="linear", p_max=0.5) for s in range(200)]
    assert all(e == 0 for e in eps[:33])  # step 32 is progress 0
    assert eps[112] == pytest.approx(0.25) and eps[192] == pytest.approx(0.5) and eps[199] == pytest.approx(0.5)
    for name in sg.SCHEDULES:
        vals = [sg.epsilon(s, start=10, total=100, name=name, p_max=0.7) for s in range(0, 110, 5)]
        assert all(a <= b + 1e-12 for a, b in zip(vals, vals[1:]))


def test_bad_schedule_parameters_are_named():
    with pytest.raises(ValueError, match="'schedule'"):
        sg.schedule("cosine", 0.5)
    with pytest.raises(ValueError, match="'p_max'"):
        sg.schedule("linear", 0.5, p_max=1.5)
    with pytest.raises(ConfigError, match="'schedule'"):
        resolve_config("04_self_generated_tokens", schedule="cosine")
    with pytest.raises(ConfigError, match="'granularity'"):
        resolve_config("04_self_generated_tokens", granularity="word")
    with pytest.raises(ConfigError, match="'p_max'"):
        resolve_config("04_self_generated_tokens", p_max=-0.1)
    with pytest.raises(ValueError, match="'arms'"):
        sg.SelfGenStep(arm="dagger", eps_start=0, total_steps=10)
    with pytest.raises(ValueError, match="regenerate"):
        sg.SelfGenStep(arm="bash", eps_start=0, total_steps=10)


# ---------------------------------------------------------------------------------------------- mixing
def test_mixing_mask_picks_model_tokens_exactly_where_the_mask_is_set():
    y = torch.arange(40).reshape(4, 10)
    y_hat = y + 100
    valid = torch.ones(4, 10, dtype=torch.bool)
    valid[1, 6:] = False  # the model's answer is shorter there
    mask = sg.mixing_mask(valid, 0.5, torch.Generator().manual_seed(0))
    u = sg.mix(y, y_hat, mask)
    assert torch.equal(u == y_hat, mask) and torch.equal(u[~mask], y[~mask])
    assert not mask[1, 6:].any()
    again = sg.mixing_mask(valid, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)  # deterministic under a seed
    assert not sg.mixing_mask(valid, 0.0, torch.Generator()).any()
    assert torch.equal(sg.mixing_mask(valid, 1.0, torch.Generator()), valid)


def test_mixing_rate_and_granularity():
    valid = torch.ones(1000, 100, dtype=torch.bool)
    rate = sg.mixing_mask(valid, 0.3, torch.Generator().manual_seed(1)).float().mean().item()
    assert abs(rate - 0.3) < 0.02
    seq = sg.mixing_mask(valid[:200, :8], 0.5, torch.Generator().manual_seed(2), "sequence")
    assert all(r.all() or not r.any() for r in seq) and 0 < seq[:, 0].sum() < 200
    whole = sg.mixing_mask(valid[:5, :8], 0.5, torch.Generator().manual_seed(3), "batch")
    assert whole.all() or not whole.any()


def _batch(rows):
    return sg.collate([{"prompt": p, "answer": a, "idx": i} for i, (p, a) in enumerate(rows)], pad_id=0)


def test_batch_targets_and_answer_replacement_with_ragged_prompts():
    b = _batch([([1, 5, 6], [7, 8, 9]), ([1, 5], [7, 8])])
    t = b.targets()
    assert t[0].tolist() == [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9, IGNORE_INDEX]
    assert t[1].tolist() == [IGNORE_INDEX, 7, 8, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    new = torch.tensor([[70, 80, 90], [71, 81, 91]])
    mask = torch.tensor([[False, True, True], [True, False, True]])
    u = b.with_answers(new, mask)
    assert u[0].tolist() == [1, 5, 6, 7, 80, 90] and u[1].tolist() == [1, 5, 71, 8, 0, 0]  # pad untouched


def test_bash_mixes_each_rows_own_pool_tokens_at_its_own_positions():
    """BASH takes row i's own tokens from pool row idx[i] at exactly its mixed positions; gold, labels, pad stay."""
    I = IGNORE_INDEX
    batch = sg.collate([{"prompt": [1, 2, 3], "answer": [11, 12, 13, 14], "idx": 2},
                        {"prompt": [1, 2], "answer": [21, 22], "idx": 0},
                        {"prompt": [1], "answer": [31, 32, 33], "idx": 3}], pad_id=0)
    pool = torch.tensor([[100, 101, 102], [110, 111, 112], [120, 121, 0], [130, 131, 132]])  # 100 + 10 row + a
    lens = torch.tensor([3, 3, 2, 3])  # pool row 2 shorter than its answer, pool row 0 longer
    full = torch.tensor([[1, 2, 3, 120, 121, 13, 14],  # every valid position mixed (eps = 1)
                         [1, 2, 100, 101, 0, 0, 0],
                         [1, 130, 131, 132, 0, 0, 0]])
    valid = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)  # a < min(|y|, |yhat|)
    for p_max in (1.0, 0.5):
        step = sg.SelfGenStep(arm="bash", eps_start=0, total_steps=1, schedule="const", p_max=p_max, seed=7,
                              regenerate=lambda m: (pool, lens))
        inputs, attention, targets, _, _ = step.build(None, batch, 1)
        mask = sg.mixing_mask(valid, p_max, torch.Generator().manual_seed(1_000_003 * 7 + 2))  # the step's coins
        assert 0 < mask.sum() < valid.sum() if p_max < 1 else torch.equal(mask, valid)
        want = batch.input_ids.clone()
        for i, a in mask.nonzero().tolist():
            want[i, batch.ans_start[i] + a] = full[i, batch.ans_start[i] + a]
        assert torch.equal(inputs, want) and torch.equal(attention, batch.attention_mask)
        assert targets.tolist() == [[I, I, 11, 12, 13, 14, I], [I, 21, 22, I, I, I, I], [31, 32, 33, I, I, I, I]]


def test_random_wrong_tokens_are_uniform_over_the_other_candidates():
    candidates = torch.tensor([2, 5, 7, 9])
    y = torch.tensor([5, 9, 3] * 4000)  # 5 and 9 are candidates, 3 is not
    out = sg.random_wrong_tokens(y, candidates, torch.Generator().manual_seed(0))
    for gold, others in ((5, [2, 7, 9]), (9, [2, 5, 7]), (3, [2, 5, 7, 9])):
        got = out[y == gold]
        counts = torch.stack([(got == t).sum() for t in others]).float() / len(got)
        assert set(got.tolist()) == set(others), gold  # never the gold token, every other candidate
        assert torch.allclose(counts, torch.full_like(counts, 1 / len(others)), atol=0.03), (gold, counts)
    with pytest.raises(ValueError, match="2 candidate"):
        sg.random_wrong_tokens(y, torch.tensor([4]), torch.Generator())


def test_noise_corrupts_exactly_where_bash_puts_own_errors_with_random_wrong_tokens():
    """The control: at eps = 1 BASH's input differs from gold where the own answer errs; `noise` differs at exactly
    those positions, with a random digit other than gold, which is the model's own digit only about 1 in 9 times."""
    allowed = torch.zeros(len(TOK), dtype=torch.bool)
    allowed[[DIGIT[d] for d in "0123456789"]] = True
    gen = torch.Generator().manual_seed(3)
    gold = torch.randint(0, 10, (256, 8), generator=gen)
    own = torch.where(torch.rand(gold.shape, generator=gen) < 0.3, torch.randint(0, 10, gold.shape, generator=gen),
                      gold)  # own errors at about 27% of positions, different in every row
    to_ids = lambda a: torch.tensor([[DIGIT[str(d)] for d in r] for r in a.tolist()])
    prompt = TOK("1=")["input_ids"]
    batch = sg.collate([{"prompt": prompt, "answer": to_ids(g[None])[0].tolist(), "idx": i}
                        for i, g in enumerate(gold)], TOK.pad_token_id)
    pool = (to_ids(own), torch.full((256,), 8))
    built = {}
    for arm in ("bash", "noise"):
        step = sg.SelfGenStep(arm=arm, eps_start=0, total_steps=1, schedule="const", p_max=1.0, allowed=allowed,
                              regenerate=lambda m: pool, pad_id=TOK.pad_token_id, seed=0)
        built[arm] = step.build(None, batch, 1)
    start = len(prompt)
    gold_in, bash_in, noise_in = (t[:, start: start + 8] for t in (batch.input_ids, built["bash"][0], built["noise"][0]))
    assert torch.equal(bash_in, to_ids(own))
    assert torch.equal(noise_in != gold_in, bash_in != gold_in)  # the same corrupted positions
    changed = bash_in != gold_in
    assert allowed[noise_in].all() and changed.sum() > 400
    assert 0.07 < (noise_in[changed] == bash_in[changed]).float().mean() < 0.16  # own digit ~ 1/9 by chance
    assert torch.equal(built["noise"][2], built["bash"][2])  # the same reference targets


def test_bash_tf_pool_is_the_teacher_forced_argmax_of_every_row(small):
    """BASH's second reading mixes the snapshot's argmax p(. | x, y_<t): row by row, unpadded, pad beyond."""
    from seqnb.papers.self_generated_tokens.exposure import teacher_forced_answers

    cfg, model, task = small
    rows = [task.train_rows[0], {**task.train_rows[1], "answer": task.train_rows[1]["answer"][:3]}]  # ragged
    model.train()
    pred, lens = teacher_forced_answers(model, rows, pad_id=task.pad, allowed=task.allowed, batch_size=1)
    assert model.training and lens.tolist() == [cfg.length, 3]
    model.eval()
    with torch.no_grad():
        for i, r in enumerate(rows):
            logits = model(input_ids=torch.tensor([r["prompt"] + r["answer"]])).logits[0]
            at = torch.arange(len(r["answer"])) + len(r["prompt"]) - 1
            assert pred[i, : lens[i]].tolist() == greedy(restrict(logits[at], task.allowed)).tolist()
    model.train()
    assert pred[1, 3:].tolist() == [task.pad] * (cfg.length - 3)
    step = ex.make_step("bash_tf", cfg, task)
    pool, pool_len = step.regenerate(model)
    want, _ = teacher_forced_answers(model, task.train_rows, pad_id=task.pad, allowed=task.allowed)
    assert torch.equal(pool, want) and pool_len.tolist() == [cfg.length] * len(task.train_rows)


# ------------------------------------------------------------------------------------------------- RAC
def test_rac_cut_on_the_hand_made_example():
    y = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    y_hat = torch.tensor([[1, 2, 4, 5, 5], [1, 2, 3, 4, 5], [9, 2, 3, 4, 5]])
    valid = torch.ones_like(y, dtype=torch.bool)
    assert sg.first_deviation(y, y_hat, valid).tolist() == [2, -1, 0]
    k, c = sg.rac_cut(y, y_hat, valid, 1.0, torch.Generator().manual_seed(0))
    assert c[1] == -1 and 2 <= c[0] <= 4 and 0 <= c[2] <= 4  # an example without own error stays TF
    u = sg.mix(y, y_hat, sg.rac_mask(torch.tensor([2, -1, 0]), 5))
    assert u.tolist() == [[1, 2, 4, 4, 5], [1, 2, 3, 4, 5], [9, 2, 3, 4, 5]]  # own prefix, then the reference
    _, none = sg.rac_cut(y, y_hat, valid, 0.0, torch.Generator())
    assert (none == -1).all()
    cuts = torch.stack([sg.rac_cut(y[:1], y_hat[:1], valid[:1], 1.0, torch.Generator().manual_seed(s))[1]
                        for s in range(200)])
    assert set(cuts.flatten().tolist()) == {2, 3, 4}  # uniform over first error .. end


def test_rac_edit_alignment_after_an_inserted_token():
    eos = 99
    y, y_hat = [1, 2, 3, 4, 5, eos], [1, 2, 2, 3, 4, 5, eos]  # the model wrote 2 twice
    inputs, targets = sg.rac_edit_example(y, y_hat, k=2, c=3)
    assert inputs == [1, 2, 2, 3, 4, 5, eos]
    assert targets == [1, 2, 3, IGNORE_INDEX, 4, 5, eos]  # after "1 2 2 3" the reference continues with 4
    assert sg.aligned_end([1, 2, 3], [1, 2, 3, 4]) == 3 and edit_distance("kitten", "sitting") == 3


# --------------------------------------------------------------------------------- arms on a real model
@pytest.fixture(scope="module")
def small():
    cfg = resolve_config("04_self_generated_tokens", output_dir="/tmp/unused", length=6, n_train=64, n_eval=32,
                         max_steps=8, batch_size=16, eval_every=4, ckpt_every=8, log_every=2, n_layer=1,
                         d_model=32, n_head=2, eps_start_epochs=0.25, gen_every_epochs=1.0, eval_batch_size=64)
    model, tok = ex.build_model(cfg, 0)
    return cfg, model, ex.build_task(cfg)


def test_targets_are_always_the_reference_and_model_tokens_only_where_mixed(small):
    cfg, model, task = small
    batch = sg.collate(task.train_rows[:16], task.pad)
    fixed = torch.tensor([[DIGIT["0"]] * cfg.length] * len(task.train_rows))  # a known "own" answer

    def regenerate(_):
        return fixed, torch.full((len(fixed),), cfg.length)

    for arm in sg.ARMS:
        step = sg.SelfGenStep(arm=arm, eps_start=0, total_steps=1, p_max=1.0, allowed=task.allowed,
                              regenerate=regenerate, pad_id=task.pad)
        inputs, _, targets, _, _ = step.build(model, batch, 1)
        assert torch.equal(targets, batch.targets()), arm
        changed = inputs != batch.input_ids
        assert not changed[:, : batch.ans_start[0]].any()  # the prompt is never touched
        if arm == "tf":
            assert not changed.any()
        if arm in ("bash", "rac"):
            assert (inputs[changed] == DIGIT["0"]).all() and changed.any()


def test_ss_pass_one_has_no_gradient_and_the_loss_is_ce_on_the_fixed_mixed_input(small):
    cfg, model, task = small
    batch = sg.collate(task.train_rows[:16], task.pad)
    y_hat = sg.teacher_forced_predictions(model, batch, task.allowed)
    assert not y_hat.requires_grad and y_hat.dtype == torch.long and model.training
    step = sg.SelfGenStep(arm="ss", eps_start=0, total_steps=1, p_max=1.0, allowed=task.allowed, seed=3)
    model.zero_grad()
    loss, logs = step(model, batch, 1)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    mask = sg.mixing_mask(batch.answer_valid, 1.0, torch.Generator().manual_seed(1_000_003 * 3 + 1))
    mixed = batch.with_answers(y_hat, mask)
    model.zero_grad()
    sg.reference_loss(model, mixed, batch.attention_mask, batch.targets()).backward()
    assert all(torch.allclose(a, p.grad) for a, p in zip(grads, model.parameters()))
    assert step.cost.extra_fwd == 1 and logs["eps"] == 1.0


def test_short_training_cost_accounting_and_summary(small, tmp_path):
    cfg, model, task = small
    from dataclasses import replace

    cfg = replace(cfg, output_dir=str(tmp_path), arms=("tf", "ss", "bash", "rac"))
    runs = {0: {arm: ex.run_arm(arm, cfg, task, model, ngram_embedder()) for arm in cfg.arms}}
    # eps_start = 1 step, eps(1) = 0 (progress 0): mixing from step 2 on, rounds every 4 steps: at 2 and 6
    assert runs[0]["ss"].results["extra_fwd"] == 6
    assert runs[0]["tf"].results["gen_tokens"] == 0 and runs[0]["tf"].results["extra_fwd"] == 0
    assert runs[0]["bash"].results["gen_tokens"] == 2 * cfg.n_train * cfg.length
    results = ex.summarize(runs)
    assert set(results) == {"tf", "ss", "bash", "rac", "tf@gold", "tf@own"}
    for key in ("em", "tf_err", "fr_err", "acc_err", "pct_ex", "recovery_rate", "edit_dist", "ngram_dist",
                "wall_s", "gen_s", "extra_fwd", "gen_tokens"):
        assert all(math.isfinite(results[a][key]) for a in cfg.arms), key
    assert [c["step"] for c in ex.curves(runs)["bash"]] == [4, 8]
    kept = ex.claims(cfg)
    for c in kept:
        c.holds(results)  # every claim of the arms that ran finds its numbers
    assert {"bash_improves_em", "rac_improves_em"} <= {c.id for c in kept}
    assert not {c.id for c in kept} & {"noise_improves_em", "bash_tf_improves_em", "own_tokens_matter"}


# ------------------------------------------------------------------------------- exposure measurement
class RuleSorter(torch.nn.Module):
    """A fake causal LM over the char tokenizer for sorting: the next answer digit is chosen by `rule(x, prefix)`
    (x: the prompt digits, prefix: the answer so far). It keeps its whole context in `past_key_values`."""

    def __init__(self, rule):
        super().__init__()
        self.rule, self.dummy = rule, torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        ctx = input_ids if past_key_values is None else torch.cat([past_key_values, input_ids], dim=1)
        logits = torch.zeros(*ctx.shape, len(TOK))
        for b, row in enumerate(ctx.tolist()):
            text = "".join(ID2DIGIT.get(i, "") for i in row)
            eq = row.index(DIGIT["="])
            x = [int(ch) for ch in text[: text.index("=")]]
            for i in range(eq, len(row)):
                prefix = [int(ch) for ch in text[text.index("=") + 1: text.index("=") + 1 + i - eq]]
                logits[b, i, DIGIT[str(self.rule(x, prefix))]] = 30.0
        n = input_ids.shape[1]
        return type("Out", (), {"logits": logits[:, -n:], "past_key_values": ctx})()


def count_rule(x, prefix):  # the smallest digit not used up yet: correct under any gold prefix
    return min(d for d in range(10) if prefix.count(d) < x.count(d)) if len(prefix) < len(x) else 0


def skip_at_2(x, prefix):  # counts like count_rule, but at position 2 writes the digit after the right one
    right = count_rule(x, prefix)
    return (right + 1) % 10 if len(prefix) == 2 else right


def rows(texts):
    return [{"prompt": TOK(t + "=")["input_ids"], "answer": TOK("".join(sorted(t)), add_special_tokens=False)[
        "input_ids"]} for t in texts]


def test_exposure_of_an_oracle_is_zero():
    out = exposure(RuleSorter(lambda x, p: sorted(x)[len(p)] if len(p) < len(x) else 0), rows(["30412", "77170"]),
                   pad_id=TOK.pad_token_id)
    assert out["e_tf"] == [0] * 5 and out["e_fr"] == [0] * 5 and out["em"] == 1.0 and out["acc_err"] == 0
    assert max(out["nll_tf"]) < 1e-6 and max(out["nll_fr"]) < 1e-6


def test_exposure_of_a_model_that_errs_once_then_shifts():
    # sorted "43210" = 0 1 2 3 4; own output 0 1 3 2 4: wrong at 2 (skip), wrong at 3 (the skipped 2), recovers
    out = exposure(RuleSorter(skip_at_2), rows(["43210"]), pad_id=TOK.pad_token_id, allowed=None)
    assert [ID2DIGIT[i] for i in out["y_hat"][0].tolist()] == list("01324")
    assert out["e_tf"] == [0, 0, 1, 0, 0] and out["e_fr"] == [0, 0, 1, 1, 0]
    assert out["acc_err_curve"] == [0, 0, 0, 1, 1] and out["acc_err"] == 1 and out["pct_ex"] == 100
    assert out["ex_share"] == 50 and out["recovery_rate"] == 0.5 and out["err_after_error"] == 0.5
    assert out["em"] == 0 and out["tf_err"] == pytest.approx(0.2) and out["fr_err"] == pytest.approx(0.4)
    assert out["nll_fr"][3] > 20 and out["nll_tf"][3] < 1e-6  # the reference 3 after the own prefix 0 1 3


def test_a_model_that_ignores_its_prefix_has_no_exposure_gap():
    def blind(x, prefix):  # right from (x, t) alone, except always wrong at position 2
        right = sorted(x)[len(prefix)] if len(prefix) < len(x) else 0
        return (right + 1) % 10 if len(prefix) == 2 else right

    out = exposure(RuleSorter(blind), rows(["43210", "98765", "11111"]), pad_id=TOK.pad_token_id)
    assert out["e_fr"] == out["e_tf"] == [0, 0, 1, 0, 0] and out["acc_err"] == 0 and out["pct_ex"] == 0


def test_greedy_answers_with_kv_cache_match_full_recompute(small):
    cfg, model, task = small
    prompts = [r["prompt"] for r in task.eval_rows[:8]] + [task.eval_rows[0]["prompt"][:4]]  # a ragged one
    fast, lens = greedy_answers(model, prompts, 6, pad_id=task.pad, allowed=task.allowed, batch_size=4)
    model.eval()
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids = list(p)
            for _ in range(6):
                ids.append(int(greedy(restrict(model(input_ids=torch.tensor([ids])).logits[0, -1], task.allowed))))
            assert fast[i].tolist() == ids[len(p):]
    model.train()
    assert lens.tolist() == [6] * 9


def test_measures_and_distances():
    err_tf = torch.tensor([[0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    err_fr = torch.tensor([[0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    m = measures(err_tf, err_fr, torch.ones(2, 3, dtype=torch.bool))
    assert m["e_fr"] == [0.5, 1.0, 1.0] and m["acc_err"] == 2.0 and m["pct_ex"] == pytest.approx(400)
    embed = ngram_embedder()
    d = embedding_distance(["0011223", "0011223", "9"], ["0011223", "0011224", "0"], embed)
    assert d[0] == pytest.approx(0, abs=1e-6) and 0 < d[1] < d[2] <= 1 + 1e-6


def test_rac_edit_step_builds_aligned_targets_for_text_answers():
    eos, pad = 99, 0
    batch = sg.collate([{"prompt": [1, 50], "answer": [11, 12, 13, 14, eos], "idx": 0}], pad)
    own = torch.tensor([[11, 12, 12, 13, 14, eos]])  # one inserted token: lengths drift

    step = sg.SelfGenStep(arm="rac", eps_start=0, total_steps=1, p_max=1.0, rac_alignment="edit", pad_id=pad,
                          regenerate=lambda m: (own, torch.tensor([6])), seed=0)
    inputs, attention, targets, _, logs = step.build(None, batch, 1)
    answer = inputs[0, 2:].tolist()
    assert answer[:3] == [11, 12, 12] and answer[-1] == eos and attention.sum() == inputs.shape[1]
    assert logs["rac_frac"] == 1.0
    kept = [t for t in targets[0].tolist() if t != IGNORE_INDEX]
    assert kept[:2] == [11, 12] and kept[-1] == eos  # reference up to the first error, reference suffix after
    assert 12 not in kept[2:]  # the own duplicate is never a target


TEXT = char_tokenizer("abcdefghijklmnopqrstuvwxyz ?:\n")
EOS = TEXT.eos_token_id


def _text_ids(s):  # characters; "$" is EOS and "_" an ignored target
    return [EOS if ch == "$" else IGNORE_INDEX if ch == "_" else TEXT.convert_tokens_to_ids(ch) for ch in s]


def _text_build(arm, alignment, gold, own, seed=0):
    """Rows as the text tasks encode them (<bos> prompt, answer + EOS), the own answers as a pool (EOS, then pad)
    in reverse row order, and what the arm builds at eps = 1: (batch, (inputs, attention, targets, ...))."""
    rows = [{"prompt": TEXT(f"capital of {c}?\nanswer:")["input_ids"], "answer": _text_ids(y), "idx": len(gold) - 1 - i}
            for i, (c, y) in enumerate(gold)]
    pool = pad_sequences([_text_ids(o) for o in reversed(own)], TEXT.pad_token_id)
    lens = torch.tensor([len(o) for o in reversed(own)])
    step = sg.SelfGenStep(arm=arm, eps_start=0, total_steps=1, schedule="const", p_max=1.0, rac_alignment=alignment,
                          pad_id=TEXT.pad_token_id, eos_id=EOS, regenerate=lambda m: (pool, lens), seed=seed,
                          vocab_size=len(TEXT))
    batch = sg.collate(rows, TEXT.pad_token_id)
    return batch, step.build(None, batch, 1)


RAC_EDIT = {  # (country, reference, own answer): every (inputs, targets) the edit gives, one per cut c = k .. last
    ("france", " paris$", " parris$"): {(" parrs$", " paris$"), (" parris$", " pari_s$"), (" parris$", " pari__$")},
    ("portugal", " lisbon$", " lisbn$"): {(" lisbn$", " lisbo$")},  # no cut at the own EOS
    ("switzerland", " bern$", " bern$"): {(" bern$", " bern$")},  # no own error: teacher forcing
}


def test_rac_edit_on_text_gives_the_hand_made_edit_of_each_row_for_every_cut():
    """RAC-edit on text: each row's context and targets are one of its hand-made edits, and every cut occurs."""
    seen = set()
    for seed in range(40):
        batch, (inputs, attention, targets, _, _) = _text_build(
            "rac", "edit", [(c, y) for c, y, _ in RAC_EDIT], [o for *_, o in RAC_EDIT], seed)
        for i, (row, edits) in enumerate(RAC_EDIT.items()):
            p, n, L = int(batch.ans_start[i]), int(attention[i].sum()), inputs.shape[1]
            assert attention[i].tolist() == [1] * n + [0] * (L - n) and (inputs[i, n:] == TEXT.pad_token_id).all()
            assert torch.equal(inputs[i, :p], batch.input_ids[i, :p])  # the prompt is untouched
            assert (targets[i, : p - 1] == IGNORE_INDEX).all() and (targets[i, n - 1:] == IGNORE_INDEX).all()
            got = (inputs[i, p:n].tolist(), targets[i, p - 1: n - 1].tolist())
            match = [e for e in edits if (_text_ids(e[0]), _text_ids(e[1])) == got]
            assert match, (row, got)
            seen.add((row, match[0]))
    assert seen == {(row, e) for row, edits in RAC_EDIT.items() for e in edits}


@pytest.mark.parametrize("arm, alignment", [("bash", "position"), ("rac", "edit"), ("bash_tf", "position"),
                                            ("noise", "position")])
def test_own_eos_never_lands_mid_context_on_text(arm, alignment):
    """On text, an own answer that stops early ("pa$") never puts EOS before the end of a BASH/RAC context, nor
    does a teacher-forced prediction of EOS ("ma$rid$", the pool of BASH's second reading)."""
    own = [" pa$", " ma$rid$"]
    _, (inputs, attention, *_) = _text_build(arm, alignment, [("france", " paris$"), ("spain", " madrid$")], own)
    for row, n in zip(inputs.tolist(), attention.sum(1).tolist()):
        assert EOS not in row[: n - 1], "".join(TEXT.convert_ids_to_tokens(row[:n]))


def test_views_build_headless():
    from seqnb.papers.self_generated_tokens import views as viz

    row = {"step": 4, "e_tf": [0, 0.1], "e_fr": [0, 0.2], "acc_err_curve": [0, 0.1], "pct_ex_curve": [0, 100],
           "em": 0.5, "fr_err": 0.1, "pct_ex": 100}
    curves = {"tf": [row, {**row, "step": 8}], "bash": [row, {**row, "step": 8}]}
    slider = viz.CheckpointSlider(curves)
    assert slider.slider.value == 1 and "step 4" in slider.show(0)._suptitle.get_text()
    page = viz.samples_html(["12="], ["12"], {"tf": ["13"], "bash": ["12"]})
    assert "<b style='color:#c00'>3</b>" in page and "✓" in page


def test_text_task_path_with_local_model_and_dataset(tmp_path, monkeypatch):
    """The paper preset's code path (hub-style dataset and pretrained model, EOS answers, edit-aligned RAC,
    task metric) on local folders, offline: a small scratch model saved as a 'pretrained' folder."""
    from datasets import Dataset, DatasetDict

    from seqnb.models import build_decoder

    qa = [{"question": f"what is {a} plus {b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"}
          for a in range(8) for b in range(6)]
    DatasetDict(train=Dataset.from_list(qa[:40]), test=Dataset.from_list(qa[40:])).save_to_disk(tmp_path / "data")
    tok = char_tokenizer("".join(sorted(set("".join(r["question"] + r["answer"] for r in qa)))) + "QA:\n")
    build_decoder(tok, n_layer=1, d_model=32, n_head=2, max_len=128).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    cfg = resolve_config("04_self_generated_tokens", output_dir=str(tmp_path / "run"), task="gsm8k",
                         dataset_id=str(tmp_path / "data"), model_name=str(tmp_path / "model"), n_train=32, n_eval=8,
                         max_prompt_len=40, max_answer_len=24, max_steps=4, batch_size=8, eval_every=4,
                         ckpt_every=4, eps_start_epochs=0.0, gen_every_epochs=1.0, p_max=1.0, schedule="const",
                         rac_alignment="edit", arms=("tf", "bash", "rac"))
    init, task = ex.build_model(cfg, cfg.seed)[0], ex.build_task(cfg, tok)
    with pytest.raises(ValueError, match="init_model"):
        ex.run_experiment(cfg, init)
    built, build_model, build_task = [], ex.build_model, ex.build_task
    monkeypatch.setattr(ex, "build_model", lambda c, seed: built.append(seed) or build_model(c, seed))
    monkeypatch.setattr(ex, "build_task", lambda c, t: built.append(c.seed) or build_task(c, t))
    runs = ex.run_experiment(cfg, init, task)
    assert built == [1, 1]  # seed 0 trains from the model and task passed in; seed 1 builds its own
    monkeypatch.undo()
    final = runs[0]["rac"].results
    assert 0 <= final["gsm8k_acc"] <= 1 and "ngram_dist" in final and runs[0]["bash"].results["gen_tokens"] > 0
    task = ex.build_task(cfg, tok)
    assert all(r["answer"][-1] == tok.eos_token_id and len(r["answer"]) <= 24 for r in task.train_rows)
    assert all(len(r["prompt"]) <= 40 for r in task.train_rows)
    assert all(r["final_answer"] is not None for r in task.eval_rows)  # from the full answer, not the cut one


def test_gsm8k_metric_reads_the_final_answer_as_the_dataset_defines_it():
    from seqnb.metrics import gsm8k_accuracy, gsm8k_final_answer

    assert gsm8k_final_answer("so 7 + 5 = 12\n#### 12") == "12"
    assert gsm8k_final_answer("#### 3 then\n#### 1,250.") == "1250"  # the last one; commas and a period dropped
    assert gsm8k_final_answer("no final line, 12") is None
    # an answer without `####` is wrong even where the (cut) reference lacks one too; 12.0 equals 12
    assert gsm8k_accuracy(["x #### 12.0", "no line", "#### 5", "#### -3"], ["12", "7", "6", "-3"]) == 0.5
    with pytest.raises(ValueError, match="gold_answers"):
        gsm8k_accuracy(["#### 1"], [None])
