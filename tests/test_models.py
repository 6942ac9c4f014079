import pytest
import torch

from seqnb.models import (
    ModelNotAvailableError, add_special_tokens, build_decoder, build_encoder_decoder, count_parameters,
    load_pretrained,
)


def test_decoder_from_config_is_small_and_runs(char_tok):
    model = build_decoder(char_tok, n_layer=2, d_model=128, n_head=4, max_len=32)
    assert 100_000 < count_parameters(model) < 5_000_000
    ids = char_tok(["12+3="], return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(char_tok))
    with pytest.raises(ValueError, match="d_model"):
        build_decoder(char_tok, n_layer=1, d_model=30, n_head=4, max_len=8)


def test_encoder_decoder_from_config(char_tok):
    model = build_encoder_decoder(char_tok, n_layer=1, d_model=32, n_head=2)
    enc = char_tok(["12+3="], return_tensors="pt")
    labels = char_tok(["51"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model(**enc, labels=labels)
    assert out.logits.shape == (1, 2, len(char_tok)) and out.loss.item() > 0


def test_add_special_tokens_resizes_and_keeps_old_rows(char_tok):
    model = build_decoder(char_tok, n_layer=1, d_model=32, n_head=2, max_len=16)
    old = model.get_input_embeddings().weight.detach().clone()
    (bksp,) = add_special_tokens(model, char_tok, ["<bksp>"])
    new = model.get_input_embeddings().weight
    assert bksp == old.shape[0] and new.shape[0] == old.shape[0] + 1 == len(char_tok)
    assert torch.equal(new[: old.shape[0]], old)
    assert model.get_output_embeddings().weight.shape[0] == len(char_tok)
    assert char_tok.convert_ids_to_tokens(char_tok("1<bksp>")["input_ids"])[-1] == "<bksp>"
    assert add_special_tokens(model, char_tok, ["<bksp>"]) == [bksp]  # idempotent


def test_load_pretrained_from_local_folder(tmp_path, char_tok):
    model = build_decoder(char_tok, n_layer=1, d_model=32, n_head=2, max_len=16)
    model.save_pretrained(tmp_path)
    char_tok.save_pretrained(tmp_path)
    loaded, tok = load_pretrained(str(tmp_path))
    ids = tok(["1+1="], return_tensors="pt")["input_ids"]
    assert torch.allclose(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


def test_missing_model_offline_names_the_parameter():
    with pytest.raises(ModelNotAvailableError) as err:
        load_pretrained("seqnb-nobody/not-a-model", param="model_name")
    assert "parameter 'model_name'" in str(err.value) and "-p model_name DIR" in str(err.value)
