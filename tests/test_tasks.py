import json

import pytest

from seqnb.tasks import (
    DatasetNotAvailableError, addition, addition_answer, addition_example, bbc_news, load_hub_dataset, load_task,
    sort_digits,
)


def small_addition(seed=0, **kw):
    args = dict(n_train=300, train_digits=3, test_digits=5, n_test_per_length=20, seed=seed)
    return addition(**{**args, **kw})


def test_addition_example_format():
    assert addition_example(123, 45, 3) == {"prompt": "123+045=", "target": "8610"}
    assert addition_example(123, 45, 3, reverse_answer=False)["target"] == "0168"
    assert addition_answer("8610") == 168 and addition_answer("0168", reverse_answer=False) == 168
    assert addition_answer("86x") is None
    with pytest.raises(ValueError):
        addition_example(1234, 1, 3)


def test_addition_is_correct_deterministic_and_disjoint():
    a, b, c = small_addition(0), small_addition(0), small_addition(1)
    assert a["train"].to_list() == b["train"].to_list() and a["test"].to_list() == b["test"].to_list()
    assert a["train"]["prompt"] != c["train"]["prompt"]
    for row in a["train"].to_list() + a["test"].to_list():
        x, y = row["prompt"].rstrip("=").split("+")
        assert addition_answer(row["target"]) == int(x) + int(y)
        assert max(len(str(int(x))), len(str(int(y)))) == row["n_digits"]
    assert not set(a["train"]["prompt"]) & set(a["test"]["prompt"])


def test_addition_test_covers_every_length_and_longer_ones_are_longer():
    data = small_addition()
    assert sorted(set(data["test"]["n_digits"])) == [1, 2, 3, 4, 5]
    assert max(data["train"]["n_digits"]) == 3
    assert all(len(p) == 8 for p in data["train"]["prompt"])  # "ddd+ddd="
    longest = [p for p, n in zip(data["test"]["prompt"], data["test"]["n_digits"]) if n == 5]
    assert all(len(p) == 12 for p in longest)


def test_sort_digits():
    data = sort_digits(n_train=50, n_test=10, length=16, seed=0)
    assert len(data["train"]) == 50 and len(data["test"]) == 10
    for row in data["train"]:
        digits = row["prompt"].rstrip("=")
        assert len(digits) == 16 and row["target"] == "".join(sorted(digits))
    assert sort_digits(n_train=50, n_test=10, length=16, seed=0)["test"].to_list() == data["test"].to_list()


def test_empty_or_unknown_tasks_are_clear_errors():
    with pytest.raises(ValueError, match="n_train"):
        load_task("addition", n_train=0, train_digits=2, test_digits=2, n_test_per_length=1, seed=0)
    with pytest.raises(KeyError, match="addition"):
        load_task("mystery")


def test_bbc_news_is_real_labelled_text():
    data = bbc_news(seed=0)
    assert len(data["train"]) + len(data["test"]) == 2225
    assert data["train"].features["label"].names == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(data["train"][0]["text"].split()) > 50
    assert bbc_news(seed=0)["test"]["text"][:3] == data["test"]["text"][:3]


def test_hub_loader_reads_local_files(tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    for split, n in (("train", 4), ("test", 2)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"text": f"{split} {i}"}) + "\n" for i in range(n)))
    data = load_hub_dataset(str(folder))
    assert len(data["train"]) == 4 and data["test"][1]["text"] == "test 1"
    data["train"].to_dict()
    saved = tmp_path / "saved"
    data.save_to_disk(str(saved))
    assert load_hub_dataset(str(saved), split="test")["text"] == ["test 0", "test 1"]


def test_hub_loader_offline_error_names_parameter():
    with pytest.raises(DatasetNotAvailableError) as err:
        load_hub_dataset("seqnb-nobody/not-a-dataset", param="dataset_name")
    assert "parameter 'dataset_name'" in str(err.value) and "save_to_disk" in str(err.value)
