"""The SequenceMatch experiment (notebook 03): data, the three arms, rollouts and the evaluation suite.

Task: k distinct digits -> any permutation of them. Correct = the edited answer (after backspaces) is a
permutation of the prompt's digits and the model emitted EOS. Augmentation uses ground-truth-like noise: a
digit that is invalid at that point (not in the prompt, or already written), then `<bksp>`.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, replace

import torch
from datasets import Dataset, DatasetDict

from ..collate import PadCollator, tokenize_pairs
from ..models import add_special_tokens, build_decoder
from ..presets.sequencematch import SequenceMatchConfig
from ..tasks import SEP, load_task
from ..tokenizers import char_tokenizer
from ..train import TrainResult, sft_step, train
from .backspace import ActionBatch, Trace, collate_actions, generate_with_backspace, insert_backspace_noise
from .sequencematch import SequenceMatchStep, bc_step

BKSP = "<bksp>"
ARMS = ("mle", "bc_bksp", "sm")
EVAL_TEMPERATURES = (0.5, 1.0, 1.5)


@dataclass(frozen=True)
class Vocab:
    """Token ids the method needs, from a character tokenizer with `<bksp>` added."""

    tokenizer: object
    bksp: int
    eos: int
    pad: int
    digits: tuple[int, ...]

    @property
    def allowed(self) -> torch.Tensor:
        """The action set: digits, EOS and `<bksp>` (never PAD, BOS, UNK or the separator)."""
        mask = torch.zeros(len(self.tokenizer), dtype=torch.bool)
        mask[[*self.digits, self.eos, self.bksp]] = True
        return mask

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt)["input_ids"]

    def target_ids(self, target: str) -> list[int]:
        return self.tokenizer(target, add_special_tokens=False)["input_ids"] + [self.eos]

    def text(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def build_data(cfg: SequenceMatchConfig) -> DatasetDict:
    return load_task("permutation", n_train=cfg.n_train, n_test=cfg.n_eval, min_k=cfg.min_k, max_k=cfg.max_k,
                     seed=cfg.seed)


def build_model(cfg: SequenceMatchConfig):
    """A fresh GPT-2-style decoder over digits, `=`, specials and `<bksp>`."""
    tokenizer = char_tokenizer("0123456789" + SEP)
    model = build_decoder(tokenizer, n_layer=cfg.n_layer, d_model=cfg.d_model, n_head=cfg.n_head,
                          max_len=cfg.max_k + 2 + cfg.max_actions + 4)
    (bksp,) = add_special_tokens(model, tokenizer, [BKSP])
    digits = tuple(tokenizer.convert_tokens_to_ids(list("0123456789")))
    return model, Vocab(tokenizer, bksp, tokenizer.eos_token_id, tokenizer.pad_token_id, digits)


def invalid_digits(vocab: Vocab, prompt_len: int):
    """Ground-truth-like noise for the permutation task: digits not in the prompt or already written."""

    def wrong(edited: list[int], gold: int) -> list[int]:
        usable = set(edited[1:prompt_len]) - set(edited[prompt_len:])
        return [d for d in vocab.digits if d not in usable]

    return wrong


def augmented_set(data: Dataset, vocab: Vocab, p_noise: float, seed: int) -> Dataset:
    """Rows {actions, prompt_len, noise}: every answer position gets an invalid digit + `<bksp>` with p_noise."""
    rng = random.Random(seed)
    rows = []
    for prompt, target in zip(data["prompt"], data["target"]):
        p = vocab.prompt_ids(prompt)
        actions, noise = insert_backspace_noise(p, vocab.target_ids(target), p_noise=p_noise, bksp_id=vocab.bksp,
                                                wrong_tokens=invalid_digits(vocab, len(p)), rng=rng)
        rows.append({"actions": actions, "prompt_len": len(p), "noise": noise})
    return Dataset.from_list(rows)


def is_correct(trace: Trace, vocab: Vocab) -> bool:
    answer = trace.edited[trace.prompt_len :]
    if not trace.ended or not answer or answer[-1] != vocab.eos:
        return False
    return sorted(answer[:-1]) == sorted(trace.edited[1 : trace.prompt_len - 1])


class RolloutBuffer:
    """The model's own generations (with `<bksp>` enabled), regenerated every `roll_every` steps.

    Its state is not checkpointed: a resumed SequenceMatch run rolls out the restored model at once and then
    continues correctly, but not bit-identically to an uninterrupted run.
    """

    def __init__(self, prompts: list[str], vocab: Vocab, cfg: SequenceMatchConfig):
        self.prompts, self.vocab, self.cfg = prompts, vocab, cfg
        self.rng = random.Random(cfg.seed)
        self.rows: list[dict] = []
        self.n_refreshes = 0

    def refresh(self, model) -> None:
        chosen = self.rng.sample(self.prompts, min(self.cfg.n_rollouts, len(self.prompts)))
        traces = generate(model, self.vocab, chosen, self.cfg, temperature=self.cfg.rollout_temperature)
        self.rows = [{"actions": t.actions, "prompt_len": t.prompt_len} for t in traces]
        self.n_refreshes += 1

    def callback(self, step: int, model) -> None:
        if step % self.cfg.roll_every == 0:
            self.refresh(model)

    def batch(self, model) -> ActionBatch:
        if not self.rows:  # first step (or after a resume): roll out the current model
            self.refresh(model)
        rows = self.rng.sample(self.rows, min(self.cfg.batch_size, len(self.rows)))
        return collate_actions(rows, bksp_id=self.vocab.bksp, pad_id=self.vocab.pad)


def generate(model, vocab: Vocab, prompts: list[str], cfg: SequenceMatchConfig, *, temperature: float,
             force: list[list[int]] | None = None, seed: int | None = None) -> list[Trace]:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return generate_with_backspace(
        model, [vocab.prompt_ids(p) for p in prompts], bksp_id=vocab.bksp, eos_id=vocab.eos, pad_id=vocab.pad,
        allowed=vocab.allowed, max_actions=cfg.max_actions, temperature=temperature, force=force,
        generator=generator,
    )


def pretrain(model, data: DatasetDict, vocab: Vocab, cfg: SequenceMatchConfig) -> TrainResult:
    """Shared MLE (teacher-forced) pretraining on clean data: the checkpoint every arm starts from."""
    pre_cfg = replace(cfg, max_steps=cfg.pretrain_steps, lr=cfg.pretrain_lr)
    clean = tokenize_pairs(data["train"], vocab.tokenizer).select_columns(["input_ids", "labels"])
    return train(model, clean, pre_cfg, collate_fn=PadCollator(vocab.pad), name="pretrain")


def finetune(arm: str, pretrained, data: DatasetDict, vocab: Vocab, cfg: SequenceMatchConfig) -> TrainResult:
    """One arm from a copy of the pretrained model, same steps, lr and data order as the others."""
    model = copy.deepcopy(pretrained)
    if arm == "mle":
        clean = tokenize_pairs(data["train"], vocab.tokenizer).select_columns(["input_ids", "labels"])
        return train(model, clean, cfg, collate_fn=PadCollator(vocab.pad), step_fn=sft_step, name=arm)
    augmented = augmented_set(data["train"], vocab, cfg.p_noise, cfg.seed)

    def collate(rows):
        return collate_actions(rows, bksp_id=vocab.bksp, pad_id=vocab.pad)

    if arm == "bc_bksp":
        return train(model, augmented, cfg, collate_fn=collate, step_fn=bc_step, name=arm)
    if arm == "sm":
        buffer = RolloutBuffer(data["train"]["prompt"], vocab, cfg)
        step = SequenceMatchStep(rollouts=lambda: buffer.batch(model), eos_id=vocab.eos, allowed=vocab.allowed,
                                 beta=cfg.beta, alpha=cfg.alpha, gamma=cfg.gamma, lam=cfg.lam)
        return train(model, augmented, cfg, collate_fn=collate, step_fn=step, name=arm, callbacks=[buffer.callback])
    raise ValueError(f"unknown arm {arm!r}: use one of {ARMS}")


def injected_first_digits(prompts: list[str], vocab: Vocab, seed: int) -> list[list[int]]:
    """One invalid first answer digit per prompt (a digit not in it), the same for every model."""
    rng = random.Random(seed)
    ids = vocab.tokenizer.convert_tokens_to_ids
    return [[ids(rng.choice([d for d in "0123456789" if d not in p]))] for p in prompts]


def evaluate(model, vocab: Vocab, test: Dataset, cfg: SequenceMatchConfig) -> tuple[dict[str, float], dict]:
    """Sampled accuracy at several temperatures (same torch seed for every model), backspaces per
    generation, action-cap rate, and recovery from an injected invalid first digit (then greedy)."""
    prompts = test["prompt"]
    metrics, traces = {}, {}
    for temp in EVAL_TEMPERATURES:
        ts = generate(model, vocab, prompts, cfg, temperature=temp, seed=cfg.seed + 1234)
        traces[f"t{temp}"] = ts
        metrics[f"acc_t{temp}"] = sum(is_correct(t, vocab) for t in ts) / len(ts)
        metrics[f"bksp_per_gen_t{temp}"] = sum(t.actions[t.prompt_len :].count(vocab.bksp) for t in ts) / len(ts)
        metrics[f"cap_hit_rate_t{temp}"] = sum(not t.ended for t in ts) / len(ts)
    forced = generate(model, vocab, prompts, cfg, temperature=0.0, force=injected_first_digits(prompts, vocab, 7))
    traces["injected"] = forced
    metrics["recovery_first"] = sum(is_correct(t, vocab) for t in forced) / len(forced)
    return metrics, traces
