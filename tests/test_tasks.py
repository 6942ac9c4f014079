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


def test_permutation_test_prompts_never_appear_in_training():
    """Four-digit prompts recur in 2,000 training rows; none of the held-out prompts may be one of them."""
    from seqnb.tasks import is_permutation_answer, permutation

    data = permutation(n_train=2000, n_test=300, min_k=4, max_k=5, seed=0)
    train = set(data["train"]["prompt"])
    assert len(train) < 2000  # duplicates within training exist: the check below is not vacuous
    assert not train & set(data["test"]["prompt"]) and len(data["test"]) == 300
    assert all(is_permutation_answer(r["prompt"], r["target"]) for r in data["test"])
    assert data["train"][:5] == permutation(n_train=2000, n_test=1, min_k=4, max_k=5, seed=0)["train"][:5]


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


def test_hub_loader_reads_local_files(tmp_path, hf_cache):
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


def _hub_style_folder(folder):
    """A folder laid out like a hub Parquet repo: two configs with their own splits, listed in README.md."""
    import datasets

    for config, splits in (("small", ("train", "validation")), ("large", ("train", "validation", "test"))):
        for split in splits:
            rows = {"text": [f"{config} {split} {i}" for i in range(3)], "label": [0, 1, 0]}
            (folder / config).mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_dict(rows).to_parquet(str(folder / config / f"{split}-00000-of-00001.parquet"))
    lines = ["---", "configs:"]
    for config, splits in (("small", ("train", "validation")), ("large", ("train", "validation", "test"))):
        lines += [f"- config_name: {config}", "  data_files:"]
        lines += [f"  - split: {s}\n    path: {config}/{s}-*" for s in splits]
    (folder / "README.md").write_text("\n".join(lines + ["---", ""]))


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """The Arrow caches of local folders go to tmp_path, not ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def test_hub_mirror_stands_in_for_the_hub_with_its_configs(tmp_path, monkeypatch, hf_cache):
    _hub_style_folder(tmp_path / "mirror" / "seqnb-test" / "two-configs")
    with pytest.raises(DatasetNotAvailableError, match="SEQNB_HUB_MIRROR=DIR"):  # no mirror: the hub (offline)
        load_hub_dataset("seqnb-test/two-configs", "large", split="test")
    monkeypatch.setenv("SEQNB_HUB_MIRROR", str(tmp_path / "mirror"))
    assert load_hub_dataset("seqnb-test/two-configs", "large", split="test")["text"][0] == "large test 0"
    small = load_hub_dataset("seqnb-test/two-configs", "small")
    assert sorted(small) == ["train", "validation"] and small["validation"]["text"][2] == "small validation 2"
    stream = load_hub_dataset("seqnb-test/two-configs", "small", split="train", streaming=True)
    assert type(stream).__name__ == "IterableDataset" and next(iter(stream))["text"] == "small train 0"
    with pytest.raises(ValueError):  # as on the hub, a multi-config dataset needs its config
        load_hub_dataset("seqnb-test/two-configs", split="train")
    with pytest.raises(DatasetNotAvailableError, match="is not a folder"):  # ids absent from the mirror: the hub
        load_hub_dataset("seqnb-test/absent")


def test_hub_mirror_also_reads_save_to_disk_configs(tmp_path, monkeypatch, hf_cache):
    import datasets

    saved = tmp_path / "mirror" / "seqnb-test" / "saved" / "cfg"
    datasets.DatasetDict(train=datasets.Dataset.from_dict({"x": [1, 2]})).save_to_disk(str(saved))
    monkeypatch.setenv("SEQNB_HUB_MIRROR", str(tmp_path / "mirror"))
    assert load_hub_dataset("seqnb-test/saved", "cfg", split="train")["x"] == [1, 2]
    assert list(load_hub_dataset("seqnb-test/saved", "cfg", split="train", streaming=True)) == [{"x": 1}, {"x": 2}]


def test_script_datasets_load_their_parquet_revision_and_streaming_passes_through(monkeypatch):
    import datasets

    from seqnb.tasks.hub import PARQUET_REVISIONS

    seen = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: seen.append((a, kw)) or "loaded")
    assert load_hub_dataset("EdinburghNLP/xsum", split="test") == "loaded"
    assert seen[-1][0] == ("EdinburghNLP/xsum", None) and seen[-1][1]["revision"] == "refs/convert/parquet"
    assert PARQUET_REVISIONS["EdinburghNLP/xsum"] == "refs/convert/parquet"
    load_hub_dataset("EdinburghNLP/xsum", revision="main")  # an explicit revision wins
    assert seen[-1][1]["revision"] == "main"
    load_hub_dataset("wikimedia/wikipedia", "20231101.en", split="train", streaming=True)
    assert seen[-1][1]["streaming"] is True and seen[-1][1]["revision"] is None


def _fake_dataset_hub(monkeypatch, answer):
    """datasets sees the hub reachable; `answer(repo_id, filename)` raises or returns a downloaded file's path."""
    import datasets.load

    monkeypatch.setattr(datasets.load, "_raise_if_offline_mode_is_enabled", lambda *a, **kw: None)
    monkeypatch.setattr(datasets.load.HfApi, "hf_hub_download", lambda self, repo_id, filename, **kw:
                        answer(repo_id, filename))


def _http(status: int):
    import httpx

    return httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/datasets/x"))


def test_script_dataset_error_says_load_the_parquet_revision(monkeypatch, tmp_path):
    from seqnb.tasks.hub import DatasetScriptError

    def answer(repo_id, filename):  # the repo has its README and a loading script named after it
        path = tmp_path / "snapshots" / "0123abcd" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# placeholder")
        return str(path)

    _fake_dataset_hub(monkeypatch, answer)
    with pytest.raises(DatasetScriptError) as err:
        load_hub_dataset("seqnb-test/scripted", "cfg", split="test", param="dataset_id")
    msg = str(err.value)
    assert isinstance(err.value, DatasetNotAvailableError) and "parameter 'dataset_id'" in msg
    assert "scripted.py" in msg and "revision='refs/convert/parquet'" in msg and "-p dataset_id" in msg


def test_gated_dataset_error_says_accept_and_log_in(monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    from seqnb.tasks.hub import GatedDatasetError

    def answer(repo_id, filename):
        raise GatedRepoError("403 Client Error. Cannot access gated repo", response=_http(403))

    _fake_dataset_hub(monkeypatch, answer)
    with pytest.raises(GatedDatasetError) as err:
        load_hub_dataset("seqnb-test/gated", param="task")
    msg = str(err.value)
    assert isinstance(err.value, DatasetNotAvailableError) and "parameter 'task'" in msg
    assert "https://huggingface.co/datasets/seqnb-test/gated" in msg and "hf auth login" in msg and "HF_TOKEN" in msg


def test_unknown_dataset_error_says_check_the_id(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    from seqnb.tasks.hub import NoSuchDatasetError

    def answer(repo_id, filename):
        raise RepositoryNotFoundError("401 Client Error. Repository Not Found", response=_http(401))

    _fake_dataset_hub(monkeypatch, answer)
    with pytest.raises(NoSuchDatasetError) as err:
        load_hub_dataset("nyu-mll/gleu", "sst2", param="task")
    assert "no dataset 'nyu-mll/gleu'" in str(err.value) and "-p task" in str(err.value)


def test_a_rewritten_hub_style_folder_is_not_served_from_a_stale_cache(tmp_path, monkeypatch, hf_cache):
    """datasets keys the cache of a folder with README `configs:` on the README alone; seqnb adds the files'
    paths, sizes and times, so a second mirror (or rewritten rows) loads its own rows."""
    import datasets

    monkeypatch.setenv("SEQNB_HUB_MIRROR", str(tmp_path / "m1"))
    _hub_style_folder(tmp_path / "m1" / "seqnb-test" / "cached")
    assert load_hub_dataset("seqnb-test/cached", "small", split="train")["text"][0] == "small train 0"
    second = tmp_path / "m2" / "seqnb-test" / "cached"
    _hub_style_folder(second)
    datasets.Dataset.from_dict({"text": ["other"], "label": [1]}).to_parquet(
        str(second / "small" / "train-00000-of-00001.parquet"))
    monkeypatch.setenv("SEQNB_HUB_MIRROR", str(tmp_path / "m2"))
    assert load_hub_dataset("seqnb-test/cached", "small", split="train")["text"] == ["other"]
