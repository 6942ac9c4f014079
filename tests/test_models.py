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


def _tiny_qwen2(tok, *, vocab_size=None, tie=True):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab_size or len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=tie, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg)


def _changed_by_one_adamw_step(model, vocab: int) -> dict[str, float]:
    """The fraction of each weight matrix's entries that one AdamW step (lr 1e-5, bf16 autocast) changes."""
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.ndim == 2}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, vocab, (8, 32), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    return {n: (p.detach() != before[n]).float().mean().item() for n, p in model.named_parameters() if p.ndim == 2}


def test_bf16_checkpoint_loads_as_fp32_master_weights_that_train(tmp_path, char_tok):
    """A checkpoint stored in bf16 (as Qwen2.5-0.5B is) loads in fp32 by default, so one AdamW step at lr 1e-5 under
    bf16 autocast moves every weight matrix; the same step on the checkpoint's own bf16 weights mostly rounds away."""
    _tiny_qwen2(char_tok).to(torch.bfloat16).save_pretrained(tmp_path)
    char_tok.save_pretrained(tmp_path)
    model, _ = load_pretrained(str(tmp_path))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    fp32 = _changed_by_one_adamw_step(model, len(char_tok))
    assert len(fp32) >= 15 and min(fp32.values()) > 0.9, fp32

    bf16_model, _ = load_pretrained(str(tmp_path), dtype="auto")  # as stored: the old default
    assert {p.dtype for p in bf16_model.parameters()} == {torch.bfloat16}
    bf16 = _changed_by_one_adamw_step(bf16_model, len(char_tok))
    assert max(bf16.values()) < 0.5 and sum(bf16.values()) / len(bf16) < 0.3, bf16


def test_add_special_tokens_never_shrinks_a_padded_matrix(char_tok):
    """mT5 / Qwen2.5 pad their matrices beyond the tokenizer: new tokens take padding rows (no resize), set to the
    mean of the trained rows, input and (untied) output alike; nothing else changes and nothing shrinks."""
    n_tok = len(char_tok)
    model = _tiny_qwen2(char_tok, vocab_size=n_tok + 5, tie=False)
    inp0 = model.get_input_embeddings().weight.detach().clone()
    out0 = model.get_output_embeddings().weight.detach().clone()
    ids = add_special_tokens(model, char_tok, ["<w>", "</w>"])
    assert ids == [n_tok, n_tok + 1] and len(char_tok) == n_tok + 2
    inp, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert inp.shape[0] == out.shape[0] == n_tok + 5  # not shrunk to len(tokenizer)
    for now, then in ((inp, inp0), (out, out0)):
        assert torch.allclose(now[ids], then[:n_tok].mean(0).expand(2, -1))
        keep = [i for i in range(n_tok + 5) if i not in ids]
        assert torch.equal(now[keep], then[keep])
    # more tokens than padding rows: grows to len(tokenizer), old rows kept, every new row at the trained mean
    more = add_special_tokens(model, char_tok, [f"<x{i}>" for i in range(6)])
    assert model.get_input_embeddings().weight.shape[0] == len(char_tok) == n_tok + 8
    new = model.get_input_embeddings().weight
    assert torch.allclose(new[more], new[: n_tok + 2].mean(0).expand(6, -1))
    assert torch.equal(new[:n_tok], inp0[:n_tok])


def test_add_special_tokens_tied_growth_sets_the_mean(char_tok):
    model = build_decoder(char_tok, n_layer=1, d_model=32, n_head=2, max_len=16)
    old = model.get_input_embeddings().weight.detach().clone()
    (bksp,) = add_special_tokens(model, char_tok, ["<bksp>"])
    new = model.get_input_embeddings().weight
    assert torch.allclose(new[bksp], old.mean(0))
    assert model.get_output_embeddings().weight is new  # still tied


def test_load_pretrained_prefers_the_hub_mirror(tmp_path, char_tok, monkeypatch):
    folder = tmp_path / "mirror" / "seqnb-test" / "tiny-decoder"
    model = build_decoder(char_tok, n_layer=1, d_model=32, n_head=2, max_len=16)
    model.save_pretrained(folder)
    char_tok.save_pretrained(folder)
    monkeypatch.setenv("SEQNB_HUB_MIRROR", str(tmp_path / "mirror"))
    loaded, tok = load_pretrained("seqnb-test/tiny-decoder")
    assert len(tok) == len(char_tok) and loaded.config.n_embd == 32
    with pytest.raises(ModelNotAvailableError, match="is not a folder"):  # not in the mirror: the hub (offline)
        load_pretrained("seqnb-test/absent")


def _fake_hub(monkeypatch, error):
    """transformers sees the hub reachable and the hub answering `error` for every file (the cache is empty)."""
    import transformers.utils.hub as th
    from huggingface_hub.errors import LocalEntryNotFoundError

    def download(*args, **kwargs):
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not in the cache")
        raise error

    monkeypatch.setattr(th, "hf_hub_download", download)
    monkeypatch.setattr(th, "snapshot_download", download)
    monkeypatch.setattr(th, "is_offline_mode", lambda: False)
    monkeypatch.setattr("seqnb.models.is_offline_mode", lambda: False)


def _http(status: int):
    import httpx

    return httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/models/x"))


def test_gated_model_says_accept_the_licence_and_log_in(monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    from seqnb.models import GatedModelError

    _fake_hub(monkeypatch, GatedRepoError("403 Client Error. Cannot access gated repo", response=_http(403)))
    with pytest.raises(GatedModelError) as err:
        load_pretrained("google/gemma-2-2b", param="model_name")
    msg = str(err.value)
    assert isinstance(err.value, ModelNotAvailableError) and "parameter 'model_name'" in msg
    assert "https://huggingface.co/google/gemma-2-2b" in msg and "hf auth login" in msg and "HF_TOKEN" in msg


def test_unknown_model_id_says_check_the_spelling(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    from seqnb.models import NoSuchModelError

    _fake_hub(monkeypatch, RepositoryNotFoundError("401 Client Error. Repository Not Found", response=_http(401)))
    with pytest.raises(NoSuchModelError) as err:
        load_pretrained("google/gemma-2-2bb", param="model_name")
    assert isinstance(err.value, ModelNotAvailableError)
    assert "no model 'google/gemma-2-2bb'" in str(err.value) and "-p model_name" in str(err.value)
