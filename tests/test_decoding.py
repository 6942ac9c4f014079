import pytest
import torch

from seqnb.collate import pad_sequences
from seqnb.decoding import decode_tokens, forced_prefixes, generate, greedy, restrict, sampler
from seqnb.models import build_decoder, build_encoder_decoder


@pytest.fixture
def decoder(char_tok):
    torch.manual_seed(0)
    return build_decoder(char_tok, n_layer=1, d_model=32, n_head=2, max_len=32)


@pytest.fixture
def peaky(char_tok):
    """A decoder whose wide initialisation gives varied, prompt-dependent continuations."""
    torch.manual_seed(1)
    return build_decoder(char_tok, n_layer=2, d_model=32, n_head=2, max_len=48, init_std=0.5).eval()


def ids(tok, texts):
    return tok(texts)["input_ids"]


def full_recompute(model, prompt, n, allowed=None):
    """Greedy continuation without a cache: one full forward pass per token."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(greedy(restrict(model(input_ids=torch.tensor([seq])).logits[0, -1], allowed))))
    return seq[len(prompt):]


# ------------------------------------------------------------------------------------------- generate
def test_greedy_batched_left_padding_equals_one_by_one(decoder, char_tok):
    prompts = ["1+1=", "123+456=", "9="]
    batched = generate(decoder, char_tok, prompts, max_new_tokens=5)
    single = [generate(decoder, char_tok, [p], max_new_tokens=5)[0] for p in prompts]
    assert batched == single and len(batched) == 3


def test_kv_cache_matches_full_recompute(decoder, char_tok):
    ids_ = char_tok(["12+34="], return_tensors="pt")["input_ids"]
    cached = decoder.generate(ids_, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
    full = ids_
    for _ in range(6):
        nxt = decoder(input_ids=full).logits[:, -1].argmax(-1, keepdim=True)
        full = torch.cat([full, nxt], dim=1)
        if nxt.item() == char_tok.eos_token_id:
            break
    assert cached[0, : full.shape[1]].tolist() == full[0].tolist()


def test_sampling_is_reproducible_with_seed_and_leaves_global_rng(decoder, char_tok):
    state = torch.random.get_rng_state()
    a = generate(decoder, char_tok, ["1+1="] * 8, max_new_tokens=6, do_sample=True, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    b = generate(decoder, char_tok, ["1+1="] * 8, max_new_tokens=6, do_sample=True, seed=3)
    c = generate(decoder, char_tok, ["1+1="] * 8, max_new_tokens=6, do_sample=True, seed=4)
    assert a == b and a != c


def test_seq2seq_generation(char_tok):
    model = build_encoder_decoder(char_tok, n_layer=1, d_model=32, n_head=2)
    out = generate(model, char_tok, ["1+1=", "22+3="], max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)


def test_bad_length(decoder, char_tok):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(decoder, char_tok, ["1"], max_new_tokens=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        decode_tokens(decoder, [[1]], max_new_tokens=0, pad_id=0)


# --------------------------------------------------------------------------------------- the token loop
def test_greedy_with_cache_and_left_padding_equals_full_recompute_of_each_row(peaky, char_tok):
    prompts = ids(char_tok, ["1+1=", "123+456=", "9=", "77+8="])  # four lengths: three rows are left-padded
    out = decode_tokens(peaky, prompts, max_new_tokens=8, pad_id=char_tok.pad_token_id)
    expected = [full_recompute(peaky, p, 8) for p in prompts]
    assert out.tokens.tolist() == expected
    assert len({tuple(e) for e in expected}) > 1  # the rows really differ
    alone = [decode_tokens(peaky, [p], max_new_tokens=8, pad_id=char_tok.pad_token_id).tokens[0].tolist()
             for p in prompts]
    assert alone == expected
    assert out.lengths.tolist() == [8] * 4 and not out.finished.any()


def test_encoder_decoder_greedy_equals_full_recompute(char_tok):
    torch.manual_seed(0)
    model = build_encoder_decoder(char_tok, n_layer=1, d_model=32, n_head=2).eval()
    prompts = ids(char_tok, ["1+1=", "123+456="])
    start = char_tok.bos_token_id
    out = decode_tokens(model, prompts, max_new_tokens=5, pad_id=char_tok.pad_token_id, decoder_start_id=start)
    with torch.no_grad():
        for row, p in zip(out.tokens.tolist(), prompts):
            dec = [start]
            for _ in range(5):
                logits = model(input_ids=torch.tensor([p]), decoder_input_ids=torch.tensor([dec])).logits
                dec.append(int(logits[0, -1].argmax()))
            assert row == dec[1:]


def test_allowed_mask_is_obeyed_per_vocabulary_and_per_row(peaky, char_tok):
    digits = char_tok.convert_tokens_to_ids(list("0123"))
    allowed = torch.zeros(len(char_tok), dtype=torch.bool)
    allowed[digits] = True
    prompts = ids(char_tok, ["1+1=", "55="]) * 4
    out = decode_tokens(peaky, prompts, max_new_tokens=10, pad_id=char_tok.pad_token_id, allowed=allowed,
                        choose=sampler(5.0, torch.Generator().manual_seed(0)))
    assert set(out.tokens.flatten().tolist()) <= set(digits)
    assert full_recompute(peaky, prompts[0], 4, allowed) == decode_tokens(
        peaky, prompts[:1], max_new_tokens=4, pad_id=char_tok.pad_token_id, allowed=allowed).tokens[0].tolist()
    per_row = torch.zeros(2, len(char_tok), dtype=torch.bool)
    per_row[0, digits[0]] = per_row[1, digits[1]] = True
    out = decode_tokens(peaky, prompts[:2], max_new_tokens=3, pad_id=char_tok.pad_token_id, allowed=lambda: per_row)
    assert out.tokens.tolist() == [[digits[0]] * 3, [digits[1]] * 3]


def test_eos_ends_one_row_and_not_the_other(peaky, char_tok):
    eos, pad = char_tok.eos_token_id, char_tok.pad_token_id
    prompts = ids(char_tok, ["1+1=", "123+456="])
    allowed = torch.ones(2, len(char_tok), dtype=torch.bool)
    allowed[0, 4:] = False  # row 0: only special tokens
    allowed[0, pad] = False
    allowed[1, eos] = False  # row 1 never ends
    out = decode_tokens(peaky, prompts, max_new_tokens=6, pad_id=pad, eos_id=eos, allowed=allowed)
    first = out.tokens[0].tolist()
    end = first.index(eos)
    assert first[end + 1:] == [pad] * (6 - end - 1) and out.lengths.tolist() == [end + 1, 6]
    assert out.finished.tolist() == [True, False]
    alone = decode_tokens(peaky, prompts[1:], max_new_tokens=6, pad_id=pad, eos_id=eos, allowed=allowed[1])
    assert out.tokens[1].tolist() == alone.tokens[0].tolist()  # the finished row's pads do not disturb row 1


def test_edit_hook_forces_tokens_the_model_then_reads_and_finishes_rows(peaky, char_tok):
    pad = char_tok.pad_token_id
    prompts = ids(char_tok, ["1+1=", "123+456="])
    forced = [char_tok.convert_tokens_to_ids(list("77")), []]
    out = decode_tokens(peaky, prompts, max_new_tokens=6, pad_id=pad, edit=forced_prefixes(forced, "cpu"))
    assert out.tokens[0, :2].tolist() == forced[0]
    assert out.tokens[0, 2:].tolist() == full_recompute(peaky, prompts[0] + forced[0], 4)  # read through the cache
    assert out.tokens[1].tolist() == full_recompute(peaky, prompts[1], 6)  # an empty prefix forces nothing

    def stop_row_one_at_step_two(step):
        if step.index == 2:
            step.finished[1] = True

    out = decode_tokens(peaky, prompts, max_new_tokens=6, pad_id=pad, edit=stop_row_one_at_step_two)
    assert out.lengths.tolist() == [6, 3] and out.tokens[1, 3:].tolist() == [pad] * 3


def test_sampling_same_seed_same_draws_other_seed_other_draws(peaky, char_tok):
    prompts = ids(char_tok, ["1+1=", "9="]) * 4

    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        return decode_tokens(peaky, prompts, max_new_tokens=8, pad_id=char_tok.pad_token_id,
                             choose=sampler(1.5, g)).tokens

    assert torch.equal(sample(0), sample(0)) and not torch.equal(sample(0), sample(1))
    assert sampler(0.0, None) is greedy
    with pytest.raises(ValueError, match="temperature"):
        sampler(-1.0)


def test_a_delete_token_makes_the_cached_model_read_the_edited_sequence(peaky, char_tok):
    """Through the cache, a delete removes the row's last new token and the next logits are those of the edited
    sequence read from scratch: a real delete, a no-op one at the prompt boundary, three in a row, the model's own."""
    pad, eos = char_tok.pad_token_id, char_tok.eos_token_id
    dele, d1, d2, d3, d7 = char_tok.convert_tokens_to_ids(["+", "1", "2", "3", "7"])
    prompts = ids(char_tok, ["1+1=", "123+456=", "9=", "45="])
    forced = [[d7, dele, dele, d3], [d1, d2, dele], [], [d1, d2, dele, dele, dele, d7]]
    allowed = torch.ones(len(char_tok), dtype=torch.bool)
    allowed[eos] = False

    def from_scratch(prompt, force, n):  # the actions, and the logits each one was chosen from
        actions, edited, seen = [], list(prompt), []
        with torch.no_grad():
            for i in range(n):
                seen.append(restrict(peaky(input_ids=torch.tensor([edited])).logits[0, -1], allowed))
                a = force[i] if i < len(force) else int(greedy(seen[-1]))
                actions.append(a)
                if a != dele:
                    edited.append(a)
                elif len(edited) > len(prompt):
                    edited.pop()
        return actions, torch.stack(seen)

    cached_logits = []

    def recording_greedy(logits):
        cached_logits.append(logits)
        return greedy(logits)

    out = decode_tokens(peaky, prompts, max_new_tokens=7, pad_id=pad, allowed=allowed, delete_id=dele,
                        choose=recording_greedy, edit=forced_prefixes(forced, "cpu"))
    expected = [from_scratch(p, f, 7) for p, f in zip(prompts, forced)]
    assert out.tokens.tolist() == [actions for actions, _ in expected]
    assert any(dele in a[len(f):] for (a, _), f in zip(expected, forced))  # the model's own deletes too
    torch.testing.assert_close(torch.stack(cached_logits, 1), torch.stack([seen for _, seen in expected]),
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="delete_id"):
        decode_tokens(build_encoder_decoder(char_tok, n_layer=1, d_model=16, n_head=2), prompts, max_new_tokens=2,
                      pad_id=pad, delete_id=dele)


# ---------------------------------------------------------------------------------------------- padding
def test_pad_sequences_on_either_side_with_its_mask():
    seqs = [[5, 6, 7], [8], []]
    right, mask = pad_sequences(seqs, 0, mask=True)
    assert right.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0], [0] * 3]
    left, mask = pad_sequences(seqs, -1, side="left", mask=True)
    assert left.tolist() == [[5, 6, 7], [-1, -1, 8], [-1, -1, -1]] and mask.tolist() == [[1, 1, 1], [0, 0, 1], [0] * 3]
    assert left.dtype == mask.dtype == torch.long
    with pytest.raises(ValueError, match="side"):
        pad_sequences(seqs, 0, side="middle")
