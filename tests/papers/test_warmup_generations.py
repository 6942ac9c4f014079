import math
import string
from dataclasses import replace

import pytest
import torch
from datasets import Dataset, DatasetDict

from seqnb.config import ConfigError
from seqnb.papers import resolve_config
from seqnb.papers.warmup_generations import method as wg
from seqnb.papers.warmup_generations import experiment as ex
from seqnb.papers.warmup_generations import views as viz
from seqnb.models import build_decoder, build_encoder_decoder
from seqnb.tasks import DatasetNotAvailableError
from seqnb.tokenizers import char_tokenizer

W, CW = "<w>", "</w>"


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer("0123456789", extra_special_tokens=[W, CW])


def fmt_for(tok, seq2seq, fixed=False, digits=True):
    d = tuple(tok.convert_tokens_to_ids(list("0123456789")))
    return wg.WarmupFormat(seq2seq=seq2seq, open_id=tok.convert_tokens_to_ids(W), close_id=tok.convert_tokens_to_ids(CW),
                           eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                           decoder_start_id=tok.bos_token_id if seq2seq else None,
                           warmup_tokens=d if digits else None, answer_tokens=d if digits else None,
                           fixed_length=fixed)


def ids(tok, s):
    return tok.convert_tokens_to_ids(list(s))


def model_for(tok, seq2seq):
    torch.manual_seed(0)
    if seq2seq:
        return build_encoder_decoder(tok, n_layer=1, d_model=32, n_head=2).eval()
    return build_decoder(tok, n_layer=1, d_model=32, n_head=2, max_len=40).eval()


# ---------- the objective, by hand ----------

def test_objective_weights_and_loss_by_hand():
    # one example, K = 2: P(y|x,c_1) = 0.2, P(y|x,c_2) = 0.6 -> w = (0.25, 0.75)
    a = torch.tensor([-1.0, -2.0], requires_grad=True)
    b = torch.tensor([math.log(0.2), math.log(0.6)], requires_grad=True)
    out = wg.warmup_objective(a, b, 2, norm=2.0)
    assert torch.allclose(out.weights, torch.tensor([[0.25, 0.75]]))
    expected = -(0.25 * (-1 + math.log(0.2)) + 0.75 * (-2 + math.log(0.6))) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    # MC estimate: -log((0.2 + 0.6) / 2)
    assert out.mc_nll.item() == pytest.approx(-math.log(0.4), rel=1e-6)
    H = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2)
    assert out.weight_entropy.item() == pytest.approx(H, rel=1e-6)
    out.loss.backward()
    # weights are detached: d loss / d a_k = d loss / d b_k = -w_k / norm
    assert torch.allclose(a.grad, torch.tensor([-0.125, -0.375]))
    assert torch.allclose(b.grad, torch.tensor([-0.125, -0.375]))


def test_objective_variants_and_grouping():
    a = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)  # two examples, K = 2
    b = torch.tensor([0.0, -10.0, -5.0, -5.0], requires_grad=True)
    hard = wg.warmup_objective(a, b, 2, weights="hard")
    assert hard.weights.tolist() == [[1.0, 0.0], [1.0, 0.0]]  # argmax per example (ties -> first)
    soft = wg.warmup_objective(a, b, 2)
    assert soft.weights[1].tolist() == pytest.approx([0.5, 0.5])  # per example, not batch-wide
    base = wg.warmup_objective(a, b, 2, weights="baseline", lam=2.0)
    base.loss.backward()
    w = soft.weights.flatten()
    # warmup term uses lam * (w - 1/K); target term keeps w; mean over 2 examples
    assert torch.allclose(a.grad, -2.0 * (w - 0.5) / 2)
    assert torch.allclose(b.grad, -w / 2)
    beta = wg.warmup_objective(a, b, 2, beta=10.0)
    assert beta.weights[0, 0] < soft.weights[0, 0]  # a hotter weight temperature softens the weights
    uniform = wg.warmup_objective(a, b, 2, weights="uniform")
    assert uniform.weights.tolist() == [[0.5, 0.5], [0.5, 0.5]]  # the rewards (0 vs -10) are ignored
    one = wg.warmup_objective(a, b, 1)
    assert torch.all(one.weights == 1) and torch.all(one.weight_entropy == 0)


@pytest.mark.parametrize("kwargs", [dict(k=3), dict(k=2, beta=0.0), dict(k=2, weights="best")])
def test_objective_rejects_bad_parameters(kwargs):
    a = b = torch.zeros(4)
    with pytest.raises(ValueError, match="parameter"):
        wg.warmup_objective(a, b, **kwargs)


# ---------- sequence formats ----------

def test_decoder_only_assembly_trains_on_warmup_and_target_not_prompt(tok):
    fmt = fmt_for(tok, seq2seq=False)
    prompt = tok("123")["input_ids"]
    j = wg.assemble(fmt, prompt, ids(tok, "13"), ids(tok, "6"))
    names = tok.convert_ids_to_tokens(j.tokens)
    assert names == ["<bos>", "1", "2", "3", W, "1", "3", CW, "6", "<eos>"]
    assert j.roles == [0, 0, 0, 0, 0, wg.WARMUP, wg.WARMUP, wg.WARMUP, wg.ANSWER, wg.EOS]  # </w> is scored
    fixed = wg.assemble(fmt_for(tok, False, fixed=True), prompt, ids(tok, "13"), ids(tok, "6"))
    assert fixed.roles[7] == wg.CLOSE  # fixed length: </w> is deterministic, not scored
    sft = wg.assemble(fmt, prompt, None, ids(tok, "6"))
    assert tok.convert_ids_to_tokens(sft.tokens) == ["<bos>", "1", "2", "3", W, "6", "<eos>"]
    assert sft.roles == [0] * 5 + [wg.ANSWER, wg.EOS]


def test_encoder_decoder_assembly(tok):
    fmt = fmt_for(tok, seq2seq=True)
    prompt = tok("123")["input_ids"]
    j = wg.assemble(fmt, prompt, ids(tok, "13"), ids(tok, "6"))
    assert j.encoder_ids == prompt  # x goes to the encoder only
    assert tok.convert_ids_to_tokens(j.tokens) == ["1", "3", CW, "6", "<eos>"]
    assert j.roles == [wg.WARMUP, wg.WARMUP, wg.WARMUP, wg.ANSWER, wg.EOS]
    with pytest.raises(ValueError, match="decoder_start_id"):
        wg.WarmupFormat(seq2seq=True, open_id=1, close_id=2, eos_id=3, pad_id=0)


@pytest.mark.parametrize("seq2seq", [False, True])
def test_score_matches_a_manual_token_sum(tok, seq2seq):
    fmt, model = fmt_for(tok, seq2seq, digits=False), model_for(tok, seq2seq)
    prompt, c, y = tok("4071")["input_ids"], ids(tok, "52"), ids(tok, "9")
    short = wg.assemble(fmt, tok("5")["input_ids"], ids(tok, "1"), ids(tok, "33"))
    a, b, _ = wg.score(model, fmt, [wg.assemble(fmt, prompt, c, y), short])  # padded batch of two
    with torch.no_grad():
        if seq2seq:
            dec = [tok.bos_token_id, *c, fmt.close_id, *y]
            lp = model(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([dec])).logits.log_softmax(-1)[0]
            toks = [*c, fmt.close_id, *y, fmt.eos_id]
            per = [lp[t, tok_id].item() for t, tok_id in enumerate(toks)]
        else:
            seq = [*prompt, fmt.open_id, *c, fmt.close_id, *y, fmt.eos_id]
            lp = model(input_ids=torch.tensor([seq])).logits.log_softmax(-1)[0]
            start = len(prompt) + 1
            per = [lp[t - 1, seq[t]].item() for t in range(start, len(seq))]
    assert a[0].item() == pytest.approx(sum(per[:3]), abs=1e-4)  # c and </w>
    assert b[0].item() == pytest.approx(sum(per[3:]), abs=1e-4)  # y and <eos>


def test_score_computes_logits_only_where_tokens_are_scored(tok):
    """Decoder-only: the LM head runs from the shortest prompt on (a long prompt would otherwise cost width x
    vocabulary floats per position), and every row's sums are those of a full pass."""
    fmt, model = fmt_for(tok, False, digits=False), model_for(tok, False)
    rows = [wg.assemble(fmt, tok("40718")["input_ids"], ids(tok, "52"), ids(tok, "9")),
            wg.assemble(fmt, tok("5")["input_ids"], ids(tok, "1"), ids(tok, "33"))]
    kept, forward = [], model.forward

    def spy(*args, **kwargs):
        kept.append(kwargs.get("logits_to_keep"))
        return forward(*args, **kwargs)

    model.forward = spy
    a, b, _ = wg.score(model, fmt, rows)
    width, first = max(len(r.tokens) for r in rows), len(tok("5")["input_ids"]) + 1  # the short row's first score
    assert kept == [width - first + 1] and width - first + 1 < width
    model.forward = forward
    with torch.no_grad():
        for i, r in enumerate(rows):
            lp = model(input_ids=torch.tensor([r.tokens])).logits.log_softmax(-1)[0]
            per = {t: lp[t - 1, r.tokens[t]].item() for t in range(1, len(r.tokens))}
            want_a = sum(v for t, v in per.items() if r.roles[t] == wg.WARMUP)
            want_b = sum(v for t, v in per.items() if r.roles[t] in (wg.ANSWER, wg.EOS))
            assert (a[i].item(), b[i].item()) == (pytest.approx(want_a, abs=1e-4), pytest.approx(want_b, abs=1e-4))


def test_restricted_scoring_normalises_over_the_allowed_tokens(tok):
    fmt, model = fmt_for(tok, False, fixed=True), model_for(tok, False)
    prompt, c, y = tok("12")["input_ids"], ids(tok, "7"), ids(tok, "3")
    a, b, _ = wg.score(model, fmt, [wg.assemble(fmt, prompt, c, y)])
    seq = [*prompt, fmt.open_id, *c, fmt.close_id, *y, fmt.eos_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([seq])).logits[0]
    digits = list(fmt.warmup_tokens)
    # seq = <bos> 1 2 <w> 7 </w> 3 <eos>: c at 4 (from 3), </w> at 5 (not scored), y at 6 (from 5), <eos> at 7
    expect_a = logits[3, c[0]] - logits[3, digits].logsumexp(-1)
    answer_set = digits + [fmt.eos_id]  # y and <eos> over the digits and <eos>, as decoding samples them
    expect_b = (logits[5, y[0]] - logits[5, answer_set].logsumexp(-1)) + (
        logits[6, fmt.eos_id] - logits[6, answer_set].logsumexp(-1))
    assert a.item() == pytest.approx(expect_a.item(), abs=1e-5)
    assert b.item() == pytest.approx(expect_b.item(), abs=1e-5)


# ---------- sampling and decoding ----------

@pytest.mark.parametrize("seq2seq", [False, True])
def test_warmup_sampling_is_deterministic_under_a_seed(tok, seq2seq):
    fmt, model = fmt_for(tok, seq2seq, fixed=False), model_for(tok, seq2seq)
    prompts = [tok(s)["input_ids"] for s in ["12", "98765", "4444"]]  # different lengths: padding

    def draw(seed):
        return wg.decode(model, fmt, prompts * 4, max_warmup_len=6, max_answer_len=2, warmup_temperature=1.0,
                         generator=torch.Generator().manual_seed(seed), stop_after_warmup=True).warmups

    first, again, other = draw(0), draw(0), draw(1)
    assert first == again and first != other
    assert all(len(c) <= 6 and set(c) <= set(fmt.warmup_tokens) for c in first)


def test_decoding_with_cache_and_left_padding_equals_one_prompt_at_a_time(tok):
    fmt, model = fmt_for(tok, False, fixed=True), model_for(tok, False)
    prompts = [tok(s)["input_ids"] for s in ["12", "98765", "4"]]
    batch = wg.decode(model, fmt, prompts, max_warmup_len=4, max_answer_len=3)
    for i, p in enumerate(prompts):
        alone = wg.decode(model, fmt, [p], max_warmup_len=4, max_answer_len=3)
        assert (alone.warmups[0], alone.answers[0]) == (batch.warmups[i], batch.answers[i])
        assert len(batch.warmups[i]) == 4  # fixed length
    # greedy decoding by hand, no cache: argmax over digits, forced </w>, then answer over digits + <eos>
    seq = [*prompts[0], fmt.open_id]
    with torch.no_grad():
        for t in range(4):
            logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
            seq.append(max(fmt.warmup_tokens, key=lambda d: logits[d]))
    assert seq[-4:] == batch.warmups[0]


def test_forced_warmups_and_sft_format(tok):
    fmt, model = fmt_for(tok, False, fixed=True), model_for(tok, False)
    prompts = [tok("12")["input_ids"], tok("34")["input_ids"]]
    forced = [ids(tok, "1111"), ids(tok, "22")]
    out = wg.decode(model, fmt, prompts, max_warmup_len=4, max_answer_len=1, forced_warmups=forced)
    assert out.warmups == forced and all(len(a) == 1 for a in out.answers)
    sft = wg.decode(model, fmt, prompts, max_warmup_len=4, max_answer_len=1, with_warmup=False)
    assert sft.warmups == [[], []]
    with pytest.raises(ValueError, match="forced_warmups"):
        wg.decode(model, fmt, prompts, max_warmup_len=4, max_answer_len=1, forced_warmups=forced[:1])


def test_selection_picks_the_highest_normalised_joint_score(tok):
    fmt, model = fmt_for(tok, False, fixed=False), model_for(tok, False)
    prompts = [tok("12")["input_ids"], tok("345")["input_ids"]]
    sel = wg.select_by_joint_score(model, fmt, prompts, k=3, max_warmup_len=4, max_answer_len=2,
                                   generator=torch.Generator().manual_seed(0))
    for i, cands in enumerate(sel.candidates):
        rows = [wg.assemble(fmt, prompts[i], c, y) for c, y in cands]
        a, b, _ = wg.score(model, fmt, rows)
        n = torch.tensor([len(c) + 1 + len(y) + 1 for c, y in cands], dtype=a.dtype)  # c, </w>, y, <eos>
        best = int(((a + b) / n).argmax())
        assert sel.chosen[i] == best and sel.answers[i] == cands[best][1]


# ---------- the step ----------

@pytest.mark.parametrize("seq2seq", [False, True])
def test_warmup_step_trains_and_counts(tok, seq2seq):
    fmt, model = fmt_for(tok, seq2seq, fixed=True), model_for(tok, seq2seq)
    model.train()
    rows = [{"prompt_ids": tok(s)["input_ids"], "target_ids": ids(tok, t)} for s, t in [("123", "6"), ("45", "9")]]
    batch = wg.collate_pairs(rows)
    step = wg.WarmupStep(fmt, k=3, max_warmup_len=3, temperature=1.0, seed=0,
                         loss_norm="joint")
    loss, logs = step(model, batch, 0)
    loss.backward()
    assert model.training and torch.isfinite(loss)
    assert step.last["w"].shape == (2, 3) and torch.allclose(step.last["w"].sum(1), torch.ones(2))
    assert step.cost.sequences == 6 and step.cost.tokens > step.cost.sampled_tokens > 0
    assert 0 <= logs["weight_entropy"] <= 1
    # the logged MC NLL is per target token (|y| + EOS = 2), whatever the loss is normalised by
    b = step.last["b"]
    expected = (-(torch.logsumexp(b, 1) - math.log(3)) / 2).mean()
    assert float(logs["mc_nll"]) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="n_warmups"):
        wg.WarmupStep(fmt, k=0, max_warmup_len=3)


def test_config_errors_name_the_parameter(tmp_path):
    cfg = resolve_config("01_warmup_generations", output_dir=str(tmp_path))
    assert cfg.n_warmups == 4 and cfg.task == "running_sums"
    with pytest.raises(ConfigError, match="n_warmups"):
        resolve_config("01_warmup_generations", output_dir=str(tmp_path), n_warmups=0)
    with pytest.raises(ConfigError, match="weights"):
        resolve_config("01_warmup_generations", output_dir=str(tmp_path), weights="best")
    with pytest.raises(ConfigError, match="weight_temperature"):
        resolve_config("01_warmup_generations", output_dir=str(tmp_path), weight_temperature=0.0)
    with pytest.raises(ConfigError, match="task"):
        resolve_config("01_warmup_generations", output_dir=str(tmp_path), task="qa")


# ---------- the experiment (notebook 01), at a micro size ----------

def micro_cfg(tmp_path, **kw):
    values = dict(n_train=64, n_test=12, n_curve=6, pretrain_steps=3, max_steps=2, batch_size=8, eval_every=2,
                  log_every=1, warmup_steps=0, probe_steps=(0, 2), n_sweep=(1,), controls=True)
    return resolve_config("01_warmup_generations", output_dir=str(tmp_path), **{**values, **kw})


def test_arm_plan_and_its_errors(tmp_path):
    cfg = micro_cfg(tmp_path)
    assert list(ex.arm_plan(cfg)) == ["sft", "warmup", "warmup_k1", "warmup_lam0", "greedy_draft", "pause", "oracle"]
    assert ex.arm_plan(cfg)["warmup"] == ex.arm_plan(cfg)["warmup_lam0"] == 4
    paper = resolve_config("01_warmup_generations", preset="paper", output_dir=str(tmp_path), device="cpu",
                           precision="no", controls=True)
    with pytest.raises(ValueError, match="controls"):
        ex.arm_plan(paper)
    with pytest.raises(ValueError, match="n_train"):
        ex.prepare(micro_cfg(tmp_path, batch_size=128))


def test_the_controls_train_what_they_claim_to(tmp_path):
    """lambda = 0 keeps Warmup's sampling and weights but drops log P(c|x); the greedy-draft control trains on the
    stage-0 model's own greedy drafts, one per prompt, fixed before training, warmup and answer supervised."""
    cfg = micro_cfg(tmp_path, warmup_coef=0.7)
    prepared = ex.prepare(cfg)
    setup, model = prepared.setup, prepared.base
    warmup, lam0 = ex.make_step("warmup", setup, cfg), ex.make_step("warmup_lam0", setup, cfg)
    assert (warmup.lam, lam0.lam, lam0.k, lam0.temperature) == (0.7, 0.0, cfg.n_warmups, cfg.warmup_temperature)
    prompts = setup.prompt_ids(prepared.data["train"]["prompt"][:5])
    drafts = ex.greedy_drafts(model, prompts, setup, cfg)
    one_by_one = [ex.answer(model, "warmup", [p], setup, cfg).warmups[0] for p in prompts]
    assert [drafts[tuple(p)] for p in prompts] == one_by_one
    step = ex.make_step("greedy_draft", setup, cfg, drafts=drafts)
    assert step.train_warmup and [step.warmup_fn(p) for p in prompts] == one_by_one
    with pytest.raises(ValueError, match="greedy_draft"):
        ex.make_step("greedy_draft", setup, cfg)


def test_running_sums_and_drafts():
    data = ex.running_sums(3, 4, seed=0)
    for x, y, sums in zip(data["prompt"], data["target"], data["sums"]):
        digits = list(map(int, x))
        assert sums == "".join(str(sum(digits[:i + 1]) % 10) for i in range(4)) and y == sums[-1]


def test_experiment_runs_every_arm_records_probes_and_resumes(tmp_path):
    cfg = micro_cfg(tmp_path)
    exp = ex.run_experiment(cfg)
    res = exp.results
    assert set(res) == {"sft", "warmup", "warmup_k1", "warmup_lam0", "greedy_draft", "pause", "oracle", "warmup_swap",
                        "stage0"}
    assert all(0 <= res[a]["em"] <= 1 for a in res if a != "stage0")
    # cost: Warmup K=4 samples and scores 4 sequences per input, SFT scores one
    assert res["warmup"]["train_tokens"] > 3 * res["sft"]["train_tokens"]
    assert res["sft"]["infer_tokens_per_example"] < res["warmup"]["infer_tokens_per_example"]
    probe = exp.runs["warmup"].probe
    assert sorted(probe.records) == [0, 2]
    rec = probe.records[2][0]
    assert len(rec["warmups"]) == len(rec["answers"]) == len(rec["w"]) == 4
    assert all(len(c) == cfg.max_warmup_len for c in rec["warmups"])  # fixed-length toy warmups
    assert sum(rec["w"]) == pytest.approx(1.0)
    assert {c.id for c in ex.claims(cfg)} >= {"toy_warmup_beats_sft", "toy_warmup_content_used"}
    # a rerun with resume reloads every arm: same models, probes from disk, and the cost measured when it trained
    again = ex.run_experiment(cfg)
    assert again.runs["warmup"].probe.records == probe.records
    assert again.results["warmup"]["train_s"] == res["warmup"]["train_s"]
    assert again.results["warmup"]["train_tokens"] == res["warmup"]["train_tokens"]
    assert again.results["warmup"]["em"] == res["warmup"]["em"]
    # draws whose K warmups differ, and the view: every tied top weight is highlighted, a lower one is not
    prompts, targets, records = ex.differing_draws(exp, temperature=2.0, n=2, pool=12)
    assert 1 <= len(prompts) == len(records) <= 2  # a barely trained model at T = 2: its samples differ
    assert all(len({tuple(c) for c in r["warmups"]}) > 1 for r in records)
    rec = {"warmups": [prompts[0][1:3]] * 3, "answers": [targets[0]] * 3, "a": [-1.0] * 3, "b": [-1.0, -1.0, -9.0],
           "w": [0.5, 0.5, 0.0]}
    page = viz.records_html(exp, "t", prompts[:1], targets[:1], [rec])
    assert page.count("background:#e6f4e6") == 2


def test_format_table_marks_what_is_trained(tok):
    setup = ex.Setup(tok, fmt_for(tok, False, fixed=True), {i: d for d, i in enumerate(ids(tok, "0123456789"))})
    table = viz.format_table(setup, tok("12")["input_ids"], ids(tok, "13"), ids(tok, "3"))
    dec = [v.split(": ", 1)[1] for v in table["decoder-only"] if v]
    assert dec == ["prompt, no loss"] * 4 + ["warmup, in a = log P(c|x)"] * 2 + [
        "appended, not scored", "target, in b = log P(y|x,c)", "end of target, in b"]
    encdec = [v for v in table["encoder-decoder (decoder side)"] if v]
    assert encdec[0].startswith("encoder input: ") and len(encdec) == 2 + 5


# ---------- the paper tasks, offline: local dataset folders in the hub's field layout, scratch "pretrained" models

PAPER_METRICS = {"translation": {"bleu", "chrf++"}, "summarization": {"rouge1", "rouge2", "rougeL"},
                 "multiple_choice": {"accuracy", "macro_f1"}}


def hub_row(task, i):
    if task == "translation":
        return {"translation": {"de": f"das haus {i}", "en": f"the house {i}"}}
    if task == "flores":  # FLORES-200's hub layout: one `de-en` column
        return {"de-en": {"de": f"der baum {i}", "en": f"the tree {i}"}}
    if task == "summarization":
        return {"document": f"story {i}. " + "the cat sat on the mat. " * 4, "summary": f"a cat {i}.", "id": str(i)}
    return {"text": f"passage {i}: " + "all birds fly. " * 4, "question": f"what follows from {i}?",
            "options": [f"option {j}" for j in range(4)], "answer": i % 4}


def paper_cfg(root, task, train_rows=12, splits=None, **kw):
    """The paper preset at a micro size on a local dataset folder (`train_rows` training rows and 6 in the task's
    evaluation split) and a 1-layer model over printable characters saved as a 'pretrained' folder."""
    splits = splits or ("train", "validation" if task == "translation" else ex.TEXT_TASKS[task].eval_split)
    DatasetDict({s: Dataset.from_list([hub_row(task, i) for i in range(train_rows if s == "train" else 6)])
                 for s in splits}).save_to_disk(root / "data")
    if task == "translation":  # evaluated on a FLORES-200-style folder, as the preset evaluates on FLORES-200
        DatasetDict(test=Dataset.from_list([hub_row("flores", i) for i in range(6)])).save_to_disk(root / "flores")
        kw = {"eval_dataset_id": str(root / "flores"), **kw}
    tok = char_tokenizer(string.printable)
    arch = "decoder" if task == "multiple_choice" else "encoder_decoder"
    if arch == "decoder":
        model = build_decoder(tok, n_layer=1, d_model=32, n_head=2, max_len=128)
    else:
        model = build_encoder_decoder(tok, n_layer=1, d_model=32, n_head=2)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    values = dict(task=task, dataset_id=str(root / "data"), model_name=str(root / "model"), arch=arch,
                  output_dir=str(root / "run"), device="cpu", precision="no", n_train=8, n_test=4, n_curve=2,
                  pretrain_steps=0, max_steps=2, batch_size=4, eval_every=2, log_every=1, warmup_steps=0,
                  controls=False, n_sweep=(), probe_steps=(), max_warmup_len=3, max_answer_len=4,
                  max_prompt_len=48)
    return resolve_config("01_warmup_generations", preset="paper", **{**values, **kw})


@pytest.mark.parametrize("task", ["translation", "summarization", "multiple_choice"])
def test_paper_task_runs_on_local_folders(tmp_path, task):
    cfg = paper_cfg(tmp_path, task)
    exp = ex.run_experiment(cfg)
    if task == "translation":  # trained on the WMT-style folder, scored on the FLORES-style one
        assert all(p.startswith(cfg.task_prefix + "das haus ") for p in exp.data["train"]["prompt"])
        assert all(p.startswith(cfg.task_prefix + "der baum ") for p in exp.data["test"]["prompt"])
        assert all(t.startswith("the tree ") for t in exp.data["test"]["target"])
    res = exp.results
    assert set(res) == {"sft", "warmup", "warmup_swap"} and len(exp.data["test"]) == 4
    assert all(set(res[arm]) >= PAPER_METRICS[task] for arm in res)
    assert all(0 <= res[arm][k] <= 100 for arm in res for k in PAPER_METRICS[task])
    assert ex.primary_metric(cfg) in PAPER_METRICS[task]
    claims = ex.claims(cfg)
    assert claims and all(not c.asserted and c.metric in res[c.baseline] and c.metric in res[c.method]
                          for c in claims)
    assert all(len(p) <= cfg.max_prompt_len for p in exp.setup.prompt_ids(exp.data["train"]["prompt"]))


def test_summarization_prompts_keep_the_start_of_the_document(tmp_path):
    prepared = ex.prepare(paper_cfg(tmp_path, "summarization", max_prompt_len=20))
    prompts, tok = prepared.data["test"]["prompt"], prepared.setup.tokenizer
    assert prompts[0].startswith("summarize: story ") and prepared.data["test"]["target"][0].startswith("a cat ")
    full, cut = tok(list(prompts))["input_ids"], prepared.setup.prompt_ids(prompts)
    assert all(len(f) > 20 and c == f[:20] for f, c in zip(full, cut))


def test_multiple_choice_prompt_letters_and_truncation(tmp_path):
    cfg = paper_cfg(tmp_path, "multiple_choice", max_prompt_len=60)
    prepared = ex.prepare(cfg)
    data, setup = prepared.data["test"], prepared.setup
    assert ex.multiple_choice_example(hub_row("multiple_choice", 2), cfg)[1] == "C"  # answer index 2
    assert all(p.endswith("\nA. option 0\nB. option 1\nC. option 2\nD. option 3\nAnswer:") for p in data["prompt"])
    assert set(data["target"]) <= set("ABCD") and all(len(t) == 1 for t in data["target"])
    # a long passage loses its start: the options and the answer cue stay, after the model's <bos>
    for ids in setup.prompt_ids(data["prompt"]):
        assert len(ids) == 60 and ids[0] == setup.tokenizer.bos_token_id
        assert setup.text(ids).endswith("D. option 3\nAnswer:")


def test_choice_metrics_by_hand():
    # A and B right, " x" is no letter (wrong), D for C: per-letter F1 = 1, 1, 0, 0
    out = ex.choice_metrics(["A", " B", " x", "D"], ["A", "B", "C", "C"])
    assert out == {"accuracy": 50.0, "macro_f1": 50.0}


def test_paper_task_defaults_and_data_errors(tmp_path):
    def source(**kw):
        cfg = resolve_config("01_warmup_generations", preset="paper", output_dir=str(tmp_path), device="cpu",
                             precision="no", **kw)
        return ex.dataset_source(cfg)

    assert source() == ("wmt/wmt19", "de-en")
    cfg = resolve_config("01_warmup_generations", preset="paper", device="cpu", precision="no")
    assert ex.eval_source(cfg) == ("haoranxu/FLORES-200", "de-en", "test")
    assert ex.eval_source(replace(cfg, task="summarization")) == ("EdinburghNLP/xsum", None, "test")
    assert source(task="summarization") == ("EdinburghNLP/xsum", None)
    assert source(task="multiple_choice") == ("baber/logiqa2", "logiqa2")
    assert source(task="multiple_choice", dataset_id="mine") == ("mine", None)
    with pytest.raises(DatasetNotAvailableError, match="'dataset_id'"):
        ex.prepare(paper_cfg(tmp_path, "summarization", dataset_id="seqnb-nobody/not-a-dataset"))
    with pytest.raises(ValueError, match="'dataset_id'.*'test'"):
        ex.prepare(paper_cfg(tmp_path / "no_test", "multiple_choice", splits=("train", "validation")))
    with pytest.raises(ValueError, match="'eval_dataset_id'.*'test'"):
        ex.prepare(paper_cfg(tmp_path / "no_flores", "translation", eval_dataset_id=str(tmp_path / "no_flores" / "data")))
    with pytest.raises(ValueError, match="n_train"):  # 2 training rows: less than one batch of 4
        ex.prepare(paper_cfg(tmp_path / "small", "translation", train_rows=2))
