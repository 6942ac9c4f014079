import math

import pytest
import torch
from datasets import Dataset

from seqnb.collate import IGNORE_INDEX, PadCollator
from seqnb.metrics import (
    accuracy_by, bleu, chrf, edit_distance, exact_match, mean_token_nll, normalized_edit_distance, perplexity,
    prefix_edit_distances, rouge,
)
from seqnb.models import build_decoder


def test_exact_match_and_accuracy_by():
    assert exact_match(["12 ", "3", "4"], ["12", "3", "5"]) == pytest.approx(2 / 3)
    assert accuracy_by([2, 1, 2, 1], [True, False, False, False]) == {1: 0.0, 2: 0.5}
    with pytest.raises(ValueError):
        exact_match(["1"], ["1", "2"])
    with pytest.raises(ValueError, match="empty"):
        exact_match([], [])


def test_mean_token_nll_matches_hand_computation(char_tok):
    torch.manual_seed(0)
    model = build_decoder(char_tok, n_layer=1, d_model=32, n_head=2, max_len=16).eval()
    rows = [{"input_ids": [1, 5, 6, 7], "labels": [IGNORE_INDEX, IGNORE_INDEX, 6, 7]},
            {"input_ids": [1, 8, 9], "labels": [IGNORE_INDEX, 8, 9]}]
    nll = mean_token_nll(model, Dataset.from_list(rows), PadCollator(0), batch_size=2)
    total = 0.0
    for r in rows:  # score each labelled token given its gold prefix, one by one
        logp = model(input_ids=torch.tensor([r["input_ids"]])).logits.log_softmax(-1)[0]
        total -= sum(logp[t - 1, r["input_ids"][t]].item() for t in range(len(r["labels"])) if r["labels"][t] != -100)
    assert nll == pytest.approx(total / 4, rel=1e-5)
    assert perplexity(nll) == pytest.approx(math.exp(nll))


def test_text_metrics():
    refs = ["the cat sat on the mat", "a dog barked loudly at night"]
    assert bleu(refs, refs) == pytest.approx(100)
    assert chrf(refs, refs) == pytest.approx(100)
    assert bleu(["completely different words here", "nothing alike"], refs) < 5
    scores = rouge(["the cat sat on a mat", "a dog barked"], refs)
    assert scores["rouge1"] == pytest.approx(100 * (5 / 6 + 2 * (3 / 3 * 3 / 6) / (1 + 0.5)) / 2, rel=1e-3)
    assert 0 < scores["rouge2"] < scores["rouge1"]


def test_edit_distance_by_hand():
    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, + g
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3 and edit_distance("abc", "abc") == 0
    assert edit_distance([1, 2, 3], [3, 2, 1]) == 2
    assert normalized_edit_distance("kitten", "sitting") == pytest.approx(3 / 7)
    assert normalized_edit_distance("", "") == 0


def test_prefix_edit_distances_give_the_alignment_rac_uses():
    # the model wrote 2 twice: its prefix [1, 2, 2, 3] is closest to the reference prefix [1, 2, 3] (one deletion)
    assert prefix_edit_distances([1, 2, 2, 3], [1, 2, 3, 4, 5]) == [4, 3, 2, 1, 2, 3]
    assert prefix_edit_distances("", "ab") == [0, 1, 2]
    assert prefix_edit_distances("ab", "") == [2]
