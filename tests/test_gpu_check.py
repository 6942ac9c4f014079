"""`make gpu-check`'s CPU-side parts: the run plan, the paper-size models built from the committed configs, and
the refusal without CUDA."""

import sys

import pytest
import torch

from seqnb import gpu_check
from seqnb.cli import notebook_paths


def test_plan_runs_every_notebook_at_the_tiny_preset_on_the_gpu(tmp_path):
    jobs = gpu_check.plan(tmp_path)
    assert [name for name, _ in jobs] == list(notebook_paths())
    for name, command in jobs:
        assert command[:5] == [sys.executable, "-m", "seqnb.cli", "run", name]
        assert command[-3:] == ["-p", "device", "cuda"] and str(tmp_path / "tiny") in command


def test_paper_size_model_is_built_from_the_committed_config(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from seqnb.memory import PAPER_MODELS, PAPER_MODELS_DIR
    from seqnb.tokenizers import char_tokenizer

    folder = tmp_path / "gpt2"  # a small stand-in with its tokenizer, as seqnb.standins writes it
    tok = char_tokenizer("abc ")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=8, n_head=2)).save_pretrained(folder)
    tok.save_pretrained(folder)
    gpu_check.paper_size_models(tmp_path, ["gpt2"])
    paper = AutoConfig.from_pretrained(PAPER_MODELS_DIR / PAPER_MODELS["gpt2"])
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert (model.config.n_layer, model.config.n_embd, model.config.vocab_size) == (
        paper.n_layer, paper.n_embd, paper.vocab_size)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(124.4e6, rel=0.01)
    assert model.config.pad_token_id == tok.pad_token_id


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_refuses_without_cuda(capsys):
    assert gpu_check.main() == 2
    assert "needs a CUDA GPU" in capsys.readouterr().out
