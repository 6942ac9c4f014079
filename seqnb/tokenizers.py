"""Tokenizers built offline, both returned as `transformers.PreTrainedTokenizerFast`.

- `char_tokenizer`: one token per character, for algorithmic tasks (digits, operators).
- `train_bpe`: byte-level BPE trained with the `tokenizers` library on local text.
- `word_tokenizer`: lowercased words and punctuation marks, the most frequent `vocab_size` of them.

All three add `<bos>` in front of every encoded text, so a prompt and a training sequence start the same way.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}


def _wrap(tok: Tokenizer, padding_side: str = "right") -> PreTrainedTokenizerFast:
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side=padding_side, **SPECIAL_TOKENS)


def char_tokenizer(alphabet: str, extra_special_tokens: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over `alphabet` (unknown characters map to `<unk>`).

    `extra_special_tokens` (such as `<bksp>`) are atomic and never split into characters.
    """
    chars = sorted(set(alphabet))
    if not chars:
        raise ValueError("parameter 'alphabet': empty; pass the characters the task uses, e.g. '0123456789+='")
    specials = list(SPECIAL_TOKENS.values()) + [t for t in extra_special_tokens if t not in SPECIAL_TOKENS.values()]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(specials)
    return _wrap(tok)


def train_bpe(
    texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2, extra_special_tokens: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts` (no network: the `tokenizers` trainer runs locally)."""
    specials = list(SPECIAL_TOKENS.values()) + list(extra_special_tokens)
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() <= len(specials) + 256:
        raise ValueError("parameter 'texts': too little text to learn any merge; pass more text")
    return _wrap(tok)


def word_tokenizer(texts: Iterable[str], vocab_size: int = 4000) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: lowercase, split into runs of letters/digits and single other characters, keep the
    `vocab_size` most frequent tokens (special tokens included); anything else is `<unk>`."""
    specials = list(SPECIAL_TOKENS.values())
    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[a-z0-9]+|[^\sa-z0-9]"), behavior="isolated")]
    )
    tok.train_from_iterator(texts, trainer=trainers.WordLevelTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False))
    if tok.get_vocab_size() <= len(specials):
        raise ValueError("parameter 'texts': no words found; pass some text")
    return _wrap(tok)
