"""seqnb.memory: peak training memory from a config.json on fake tensors (no GPU, no weights)."""

import json
import re
from pathlib import Path

import pytest
from transformers import GPT2Config

from seqnb import memory
from seqnb.papers import resolve_config
from seqnb.memory import estimate_training_memory

SMALL = dict(n_embd=128, n_head=4, vocab_size=1000, n_positions=128, bos_token_id=0, eos_token_id=0)


def test_extrapolation_from_2_and_4_layers_matches_a_direct_6_layer_measurement():
    config = GPT2Config(n_layer=6, **SMALL)
    extrapolated = estimate_training_memory(config, batch_size=4, seq_len=64)  # 2 and 4 layers
    direct = estimate_training_memory(config, batch_size=4, seq_len=64, probe_layers=6)  # the 6 layers as such
    assert extrapolated.n_params == direct.n_params
    assert extrapolated.total == pytest.approx(direct.total, rel=0.05)
    assert extrapolated.parameters == direct.parameters


def test_static_memory_is_exact():
    """With accumulation the fp32 gradients are held throughout: 4 bytes per parameter each for weights and
    gradients, 8 for AdamW's two moments plus one fp32 step counter per tensor."""
    config = GPT2Config(n_layer=2, **SMALL)
    est = estimate_training_memory(config, batch_size=2, seq_len=16, grad_accum=2)
    n_tensors = 4 + 12 * 2  # wte, wpe, ln_f (2); per layer: 2 norms, c_attn, c_proj, c_fc, mlp.c_proj (w, b each)
    assert est.n_params == sum(p.numel() for p in _gpt2(config).parameters())
    assert est.parameters == 4 * est.n_params
    assert est.gradients == 4 * est.n_params
    assert est.optimizer == 8 * est.n_params + 4 * n_tensors
    assert est.total == sum(est.by_kind_gib()[k] * 2**30 for k in memory.KINDS)
    assert "GiB" in str(est) and f"{est.gib:.1f}" in str(est)


def _gpt2(config):
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import GPT2LMHeadModel

    with FakeTensorMode():
        return GPT2LMHeadModel(config)


def test_activations_grow_with_the_batch_and_checkpointing_lowers_them():
    config = GPT2Config(n_layer=4, **SMALL)
    small, large = (estimate_training_memory(config, batch_size=b, seq_len=128) for b in (2, 8))
    assert large.activations > 3 * small.activations
    assert large.parameters == small.parameters and large.optimizer == small.optimizer
    checkpointed = estimate_training_memory(config, batch_size=8, seq_len=128, gradient_checkpointing=True)
    assert checkpointed.activations < large.activations / 2
    assert checkpointed.total < large.total


def test_a_local_model_folder_is_read_and_an_unknown_hub_id_gives_none(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**GPT2Config(n_layer=2, **SMALL).to_dict()}))
    cfg = _paper("04_self_generated_tokens", model_name=str(tmp_path))
    est = memory.paper_memory(cfg)
    assert est.n_params < 10**6 and est.seq_len == cfg.max_prompt_len + cfg.max_answer_len
    assert memory.paper_memory(_paper("04_self_generated_tokens", model_name="someone/unknown-model")) is None
    assert "not known" in memory.memory_report(_paper("04_self_generated_tokens", model_name="someone/unknown"))


def _paper(notebook, **overrides):
    return resolve_config(notebook, "paper", device="cpu", **overrides)  # the estimate does not need the GPU


CASES = [("00_quickstart", None), ("02_end_to_end_planner", None), ("03_sequencematch", None)]
CASES += [("01_warmup_generations", t) for t in ("translation", "summarization", "multiple_choice")]
CASES += [("04_self_generated_tokens", t) for t in ("xsum", "dolly", "gsm8k")]
CASES += [("05_gemma_encoder", t) for t in ("sst2", "mrpc", "stsb", "rte", "cola", "qnli", "qqp", "mnli", "msmarco")]


@pytest.mark.parametrize("notebook,task", CASES)
def test_every_paper_preset_fits_an_80_gb_card(notebook, task):
    cfg = _paper(notebook, **({"task": task} if task else {}))
    assert cfg.model_name == memory.NOTEBOOKS[notebook][0]
    est = memory.paper_memory(cfg)
    report = memory.memory_report(cfg)
    assert est is not None and report.startswith("estimated peak GPU memory per training step")
    assert est.fits, report
    assert "fits an 80 GB card" in report


def test_the_report_says_what_to_change_when_a_step_does_not_fit():
    """05 before its micro-batching: 32 x 256 tokens through Gemma 2 2B in one pass. The advice keeps the 32
    examples per optimizer step, and the micro-batch it names fits."""
    cfg = _paper("05_gemma_encoder", batch_size=32, grad_accum=1, gradient_checkpointing=False)
    report = memory.memory_report(cfg)
    assert "WARNING" in report and "-p gradient_checkpointing true" in report
    batch, accum = map(int, re.search(r"-p batch_size (\d+) -p grad_accum (\d+)", report).groups())
    assert batch * accum == 32 and batch < 32
    assert memory.paper_memory(_paper("05_gemma_encoder", batch_size=batch, grad_accum=accum,
                                      gradient_checkpointing=False)).fits


def test_readme_paper_table_is_current():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert memory.paper_table() in readme, "refresh the README table with `python -m seqnb.memory`"
