import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from seqnb.tasks import bbc_news
from seqnb.tokenizers import char_tokenizer, train_bpe


def test_char_tokenizer_round_trip_and_specials(char_tok):
    assert isinstance(char_tok, PreTrainedTokenizerFast)
    ids = char_tok("12+3=")["input_ids"]
    assert char_tok.convert_ids_to_tokens(ids) == ["<bos>", "1", "2", "+", "3", "="]
    assert char_tok.decode(ids, skip_special_tokens=True) == "12+3="
    assert char_tok("7", add_special_tokens=False)["input_ids"] == [char_tok.convert_tokens_to_ids("7")]
    assert char_tok.convert_ids_to_tokens(char_tok("a")["input_ids"])[-1] == "<unk>"
    assert len({char_tok.pad_token_id, char_tok.bos_token_id, char_tok.eos_token_id, char_tok.unk_token_id}) == 4


def test_extra_special_tokens_stay_atomic():
    tok = char_tokenizer("0123456789", extra_special_tokens=["<bksp>"])
    assert tok.convert_ids_to_tokens(tok("1<bksp>2")["input_ids"]) == ["<bos>", "1", "<bksp>", "2"]


def test_left_padding(char_tok):
    batch = char_tok(["1", "123"], padding=True, padding_side="left")
    assert batch["input_ids"][0][:2] == [char_tok.pad_token_id] * 2 and batch["attention_mask"][0] == [0, 0, 1, 1]


def test_empty_alphabet_is_an_error():
    with pytest.raises(ValueError, match="alphabet"):
        char_tokenizer("")


def test_bpe_trained_offline_round_trips_and_saves(tmp_path):
    texts = bbc_news(max_docs=200)["train"]["text"]
    tok = train_bpe(texts, vocab_size=600)
    assert isinstance(tok, PreTrainedTokenizerFast) and len(tok) == 600
    sentence = "The government said on Tuesday that shares rose."
    ids = tok(sentence)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) < len(sentence) // 2
    assert tok.decode(ids, skip_special_tokens=True) == sentence
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(sentence)["input_ids"] == ids


def test_bpe_needs_text():
    with pytest.raises(ValueError, match="texts"):
        train_bpe(["a b"], vocab_size=1000)
