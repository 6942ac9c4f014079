import math
import random

import pytest
import torch
from datasets import Dataset

from seqnb.papers import resolve_config
from seqnb.papers.sequencematch import experiment as sm
from seqnb.papers.sequencematch import views as viz
from seqnb.papers.sequencematch.backspace import Trace, apply_backspaces, collate_actions
from seqnb.papers.sequencematch.method import SequenceMatchStep


@pytest.fixture
def setup(tmp_path):
    cfg = resolve_config("03_sequencematch", output_dir=str(tmp_path), n_train=64, n_eval=8, n_layer=1,
                         d_model=32, n_head=2, batch_size=8, n_rollouts=8, max_actions=12)
    torch.manual_seed(0)
    model, vocab = sm.build_model(cfg, sm.build_data(cfg))
    return cfg, model, vocab


def ids(vocab, text):
    return vocab.tokenizer.convert_tokens_to_ids(list(text))


def test_correctness_needs_a_permutation_and_eos(setup):
    _, _, v = setup
    prompt = v.prompt_ids("314=")

    def trace(answer_actions, ended=True):
        actions = prompt + answer_actions
        return Trace(actions, len(prompt), 0, apply_backspaces(actions, len(prompt), v.bksp), ended)

    def correct(t):
        return sm.is_correct(t, v, "permutation", "")

    assert correct(trace(ids(v, "4") + [v.bksp] + ids(v, "431") + [v.eos]))
    assert not correct(trace(ids(v, "4") + [v.bksp] + ids(v, "13") + [v.eos]))  # misses the 4
    assert not correct(trace(ids(v, "4331") + [v.eos]))  # a repeated digit
    assert not correct(trace(ids(v, "431"), ended=False))  # cut off before EOS


def test_ground_truth_noise_is_invalid_at_that_point(setup):
    _, _, v = setup
    prompt = v.prompt_ids("314=")
    wrong = sm.noise_tokens(v, "permutation", len(prompt))
    assert set(wrong(prompt, ids(v, "3")[0])) == set(ids(v, "0256789"))
    assert set(wrong(prompt + ids(v, "3"), ids(v, "1")[0])) == set(ids(v, "02356789"))


def test_augmented_rows_edit_back_to_the_data(setup):
    cfg, _, v = setup
    data = sm.build_data(cfg)["train"].select(range(20))
    rows = sm.augmented_set(data, v, "permutation", p_noise=0.5, seed=0)
    assert any(any(r["noise"]) for r in rows)
    for r, prompt, target in zip(rows, data["prompt"], data["target"]):
        assert apply_backspaces(r["actions"], r["prompt_len"], v.bksp) == v.prompt_ids(prompt) + v.target_ids(target)
        for i, flagged in enumerate(r["noise"]):
            if flagged:  # an invalid digit (foreign or already written), then <bksp>
                written = v.text(apply_backspaces(r["actions"][:i], r["prompt_len"], v.bksp)[r["prompt_len"]:])
                digit = v.text([r["actions"][i]])
                assert r["actions"][i + 1] == v.bksp and (digit not in prompt or digit in written)


def test_sm_step_gives_finite_loss_and_gradients(setup):
    cfg, model, v = setup
    data = sm.augmented_set(sm.build_data(cfg)["train"].select(range(8)), v, "permutation", p_noise=0.5, seed=0)
    batch = collate_actions(list(data), bksp_id=v.bksp, pad_id=v.pad)
    buffer = sm.RolloutBuffer(sm.build_data(cfg)["train"]["prompt"], v, cfg)
    step = SequenceMatchStep(rollouts=lambda: buffer.batch(model), eos_id=v.eos, allowed=v.allowed, beta=0.5,
                             alpha=10, gamma=1.0, lam=0.5)
    loss, logs = step(model, batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and set(logs) == {"loss", "bc", "sm_expert", "sm_value", "sm_chi2"}
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert buffer.n_refreshes == 1 and len(buffer.rows) == cfg.n_rollouts


def test_with_gamma_1_the_value_term_reaches_only_the_first_rollout_state(setup):
    """Sum_t V(s_t) - V(s_t+1) telescopes: at gamma = 1 the value term's gradient on the model's own states is
    exactly zero except at each rollout's first state; at gamma < 1 the intermediate states get (1 - gamma) dV.
    L_BC and the expert term read the data only."""
    cfg, model, vocab = setup
    data = sm.build_data(cfg)
    grads = sm.rollout_gradients(model, data, vocab, cfg, (1.0, 0.9))
    assert grads[1.0]["value"]["intermediate"] == 0.0 and grads[1.0]["value"]["first"] > 1e-6
    assert grads[0.9]["value"]["intermediate"] > 1e-6
    assert grads[1.0]["chi2"]["intermediate"] > 0  # the chi^2 term acts on every state, weighted by 1 / (4 alpha)
    assert all(v == 0.0 for g in grads.values() for t in ("bc", "expert") for v in g[t].values() if v == v)


def test_heldout_perplexity_scores_each_reference_token_once(setup):
    """Batched, padded perplexity = exp of the token-weighted mean NLL of each answer + EOS, row by row, unpadded."""
    cfg, model, vocab = setup
    test = sm.build_data(cfg)["test"].select(range(4))
    total, count = 0.0, 0
    for prompt, target in zip(test["prompt"], test["target"]):
        p, y = vocab.prompt_ids(prompt), vocab.target_ids(target)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + y])).logits[0].float(), -1)
        total -= sum(logp[len(p) - 1 + i, t].item() for i, t in enumerate(y))
        count += len(y)
    assert len({len(t) for t in test["target"]}) > 1  # rows of different lengths: padding is exercised
    assert sm.heldout_perplexity(model, vocab, test) == pytest.approx(math.exp(total / count), rel=1e-5)


def test_evaluate_reports_every_metric(setup):
    cfg, model, v = setup
    metrics, traces = sm.evaluate(model, v, sm.build_data(cfg)["test"], cfg)
    assert set(metrics) == {f"{k}_{t}" for k in ("acc", "bksp_per_gen", "cap_hit_rate")
                            for t in ["greedy"] + [f"t{t}" for t in sm.EVAL_TEMPERATURES]} | {"recovery_first", "ppl"}
    assert all(0 <= x <= cfg.max_actions for k, x in metrics.items() if k != "ppl") and metrics["ppl"] > 1
    assert all(t.n_forced == 1 for t in traces["injected"])
    again, _ = sm.evaluate(model, v, sm.build_data(cfg)["test"], cfg)
    assert again == metrics  # same torch seed for sampling


def test_trace_rendering_marks_deleted_tokens(setup):
    _, _, v = setup
    prompt = v.prompt_ids("12=")
    actions = prompt + ids(v, "2") + ids(v, "2") + [v.bksp] + ids(v, "1") + [v.eos]
    trace = Trace(actions, len(prompt), 1, apply_backspaces(actions, len(prompt), v.bksp), True)
    assert viz.deleted_positions(trace, v.bksp) == {len(prompt) + 1}
    assert viz.trace_text(trace, v, correct=True) == "12= 2 2\u0336 ⌫ 1 $ -> 21 ✓"
    page = viz.trace_html(trace, v, correct=True)
    assert "line-through" in page and "#ffe680" in page and "color:#080" in page


def test_explorer_view_matches_function_and_rejects_bad_input(setup):
    cfg, model, v = setup
    explorer = viz.TraceExplorer({"sm": model}, v, cfg, value="3172")
    assert explorer.ask("3172", force="9") == explorer.explain("3172", "9", "sm", 0.0)
    assert "distinct digits" in explorer.ask("112")
    assert "one answer token" in explorer.ask("31", force="99")


def test_arithmetic_task_with_a_local_pretrained_model(tmp_path):
    """The paper preset's path (task, pretrained model by folder, random noise) on local files, offline."""
    cfg = resolve_config("03_sequencematch", output_dir=str(tmp_path / "run"), task="add_or_sub_in_base",
                         max_value=50, n_train=64, n_eval=4, n_layer=1, d_model=32, n_head=2, max_actions=8)
    data = sm.build_data(cfg)
    scratch, vocab = sm.build_model(cfg, data)
    folder = tmp_path / "pretrained"
    scratch.save_pretrained(folder)
    vocab.tokenizer.save_pretrained(folder)
    model, v = sm.build_model(resolve_config("03_sequencematch", output_dir=str(tmp_path / "run"),
                                             task="add_or_sub_in_base", max_value=50, n_train=64, n_eval=4,
                                             model_name=str(folder), max_actions=8), data)
    assert v.bksp == vocab.bksp and set(v.answer_tokens) <= set(ids(v, "0123456789abcdef-"))
    prompt, target = data["train"][0]["prompt"], data["train"][0]["target"]
    wrong = sm.noise_tokens(v, cfg.task, 3)(v.prompt_ids(prompt), ids(v, target[0])[0])
    assert ids(v, target[0])[0] not in wrong and len(wrong) == len(v.answer_tokens) - 1
    gold = v.prompt_ids(prompt) + v.target_ids(target)
    assert sm.is_correct(Trace(gold, len(v.prompt_ids(prompt)), 0, gold, True), v, cfg.task, target)
    metrics, _ = sm.evaluate(model, v, data["test"], cfg)
    assert 0 <= metrics["acc_greedy"] <= 1
    explorer = viz.TraceExplorer({"sm": model}, v, cfg, value="In base 7, what is 52 - 4?")
    assert "<code" in explorer.ask("In base 7, what is 52 - 4?") and "question like" in explorer.ask("2+2")


def test_arithmetic_questions_from_a_hub_style_folder(tmp_path):
    """The DeepMind data's layout (config arithmetic__add_or_sub_in_base, question/answer with a trailing newline):
    prompts and targets stripped, n_train / n_eval rows, no test question among the training ones."""
    from datasets import DatasetDict

    questions = [f"In base 7, what is {i} + 1?" for i in range(12)]
    answers = [str(i + 1) for i in range(12)]
    DatasetDict(train=Dataset.from_dict({"question": [q + "\n" for q in questions], "answer": answers}),
                test=Dataset.from_dict({"question": [q + "\n" for q in questions[:6] + questions[:2]],
                                        "answer": answers[:6] + answers[:2]})
                ).save_to_disk(tmp_path / "math" / sm.MATH_CONFIG)
    cfg = resolve_config("03_sequencematch", output_dir=str(tmp_path / "run"), task="add_or_sub_in_base",
                         dataset_id=str(tmp_path / "math"), n_train=4, n_eval=2)
    data = sm.build_data(cfg)
    assert len(data["train"]) == 4 and len(data["test"]) == 2
    assert all(p.endswith("? ") and p.strip() in questions for p in data["train"]["prompt"])
    assert not set(data["train"]["prompt"]) & set(data["test"]["prompt"])
    assert all(answers[questions.index(p.strip())] == t for p, t in zip(data["test"]["prompt"], data["test"]["target"]))
    with pytest.raises(ValueError, match="'n_train'/'n_eval'"):
        sm.build_data(resolve_config("03_sequencematch", output_dir=str(tmp_path / "run"), task="add_or_sub_in_base",
                                     dataset_id=str(tmp_path / "math"), n_train=4, n_eval=7))


def test_missing_hub_model_offline_names_model_name(tmp_path):
    from seqnb.models import ModelNotAvailableError

    cfg = resolve_config("03_sequencematch", output_dir=str(tmp_path), model_name="nobody/no-such-model",
                         n_train=8, n_eval=2)
    with pytest.raises(ModelNotAvailableError, match="'model_name'"):
        sm.build_model(cfg, sm.build_data(cfg))


def test_claims_follow_the_calibration(tmp_path):
    tiny = sm.claims(resolve_config("03_sequencematch", output_dir=str(tmp_path)))
    assert {c.id for c in tiny if c.asserted} == {"sm_beats_mle_sampled_accuracy", "sm_beats_mle_sampled_accuracy_t1",
                                                  "bksp_beats_mle_sampled_accuracy", "bksp_recovers_bc",
                                                  "bksp_recovers_sm"}
    assert not any(c.asserted for c in tiny if c.baseline == "bc_bksp")
    other = sm.claims(resolve_config("03_sequencematch", output_dir=str(tmp_path), task="add_or_sub_in_base"))
    assert other and not any(c.asserted for c in other)  # no calibration outside the tiny preset
