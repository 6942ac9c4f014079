"""Hub datasets for the paper presets, loaded by id (or from a local folder or a local hub mirror) with clear errors.

    load_hub_dataset("nyu-mll/glue", "sst2", split="validation")
    load_hub_dataset("wikimedia/wikipedia", "20231101.en", split="train", streaming=True)   # no 11 GB download
    load_hub_dataset("EdinburghNLP/xsum")   # a script dataset: its Parquet copy is loaded (PARQUET_REVISIONS)

Where a dataset comes from, first match wins:
1. `dataset_id` is a local folder: json/csv/parquet files (a hub-style folder with a README.md `configs:` section
   works too) or a `save_to_disk` folder.
2. A local hub mirror: with the environment variable `SEQNB_HUB_MIRROR=DIR` set and `DIR/<hub id>` a folder (e.g.
   `DIR/nyu-mll/glue`), that folder is loaded instead of the hub, with the same config and split names:
   `datasets.load_dataset(folder, config, split=..., streaming=...)`. The folder is laid out like a hub Parquet repo:
   a README.md whose YAML `configs:` section lists the data files of each config and split. Make one on a machine
   with hub access with `hf download ID --repo-type dataset --local-dir DIR/ID` (add `--revision
   refs/convert/parquet` for the ids in `PARQUET_REVISIONS`), or save a loaded config with
   `save_to_disk("DIR/ID/CONFIG")`; both load. Uses: GPU servers without internet (copy DIR there), and the CPU
   rehearsal of every paper preset, where `seqnb.standins.write_dataset_standins(DIR)` writes small stand-ins in
   each dataset's exact schema. Hub ids absent from the mirror still go to the hub.
3. The Hugging Face hub (or its local cache).

Failures raise a `DatasetNotAvailableError` (a subclass per cause: `DatasetScriptError`, `GatedDatasetError`,
`NoSuchDatasetError`) that names the notebook parameter (`param`) and the fix.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import datasets

MIRROR_ENV = "SEQNB_HUB_MIRROR"

# Hub datasets whose main branch is a loading script (which datasets >= 4 refuses to run), and the revision that holds
# their Parquet conversion; used when the caller names no revision. Public code loads XSum this way:
# load_dataset("EdinburghNLP/xsum", revision="refs/convert/parquet", split="test").
PARQUET_REVISIONS: dict[str, str] = {
    "EdinburghNLP/xsum": "refs/convert/parquet",
}


class DatasetNotAvailableError(RuntimeError):
    """A dataset is neither a local folder, nor in the hub mirror, nor loadable from the hub or its local cache."""


class DatasetScriptError(DatasetNotAvailableError):
    """The hub dataset is a loading script, which `datasets` >= 4 no longer runs."""


class GatedDatasetError(DatasetNotAvailableError):
    """The hub dataset is gated: its conditions must be accepted and this machine logged in."""


class NoSuchDatasetError(DatasetNotAvailableError):
    """The hub has no such dataset (or revision), or it is private to another account."""


def hub_mirror() -> Path | None:
    """The local hub mirror folder named by `SEQNB_HUB_MIRROR`, or None when it is unset."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def mirror_path(hub_id: str) -> Path | None:
    """`$SEQNB_HUB_MIRROR/<hub_id>` when the variable is set and that folder exists, else None.

    Only hub ids (`name` or `owner/name`) are looked up; absolute or relative file paths never are."""
    root = hub_mirror()
    if root is None or not _looks_like_hub_id(hub_id):
        return None
    folder = root / hub_id
    return folder if folder.is_dir() else None


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(p and p not in (".", "..") and not p.startswith("~") for p in parts)


def mirror_note(hub_id: str) -> str:
    """The mirror part of a fix: how to set it up, or why it did not hold `hub_id`."""
    root = hub_mirror()
    if root is None:
        return f"set {MIRROR_ENV}=DIR with a copy in DIR/{hub_id}"
    return f"{MIRROR_ENV}={root} is set, but {root / hub_id} is not a folder"


def load_hub_dataset(
    dataset_id: str, config: str | None = None, *, split: str | None = None, param: str = "dataset_id",
    revision: str | None = None, streaming: bool = False, **kwargs,
) -> datasets.DatasetDict | datasets.Dataset | datasets.IterableDatasetDict | datasets.IterableDataset:
    """`datasets.load_dataset` for a hub id, a local folder, or a hub id found in the local hub mirror.

    `param` is the notebook parameter that named the dataset, so errors can say what to change. `revision` is the
    hub branch, tag or commit (default: `PARQUET_REVISIONS` for script datasets, else main; ignored for folders).
    `streaming=True` returns an iterable dataset that reads rows as they are used instead of downloading the split
    (e.g. `wikimedia/wikipedia`, 11 GB of Parquet for English). Other keyword arguments go to `load_dataset`."""
    path = Path(dataset_id).expanduser()
    local = path if path.is_dir() else mirror_path(dataset_id)
    if local is not None:
        return _load_folder(local, config, split=split, streaming=streaming, **kwargs)
    if revision is None:
        revision = PARQUET_REVISIONS.get(dataset_id)
    try:
        return datasets.load_dataset(dataset_id, config, split=split, revision=revision, streaming=streaming, **kwargs)
    except (ConnectionError, FileNotFoundError, OSError, ValueError, RuntimeError) as e:
        raise _dataset_error(dataset_id, config, param, revision, e) from e


def _load_folder(folder: Path, config: str | None, *, split: str | None, streaming: bool, **kwargs):
    """A local folder: `save_to_disk` output (also `folder/config` for a mirror), else data files / a hub-style repo."""
    for saved in ([folder / config] if config else []) + [folder]:
        if saved.is_dir() and any((saved / f).is_file() for f in ("dataset_dict.json", "dataset_info.json")):
            loaded = datasets.load_from_disk(str(saved))
            if split:
                loaded = loaded[split]
            if streaming:
                loaded = (loaded.to_iterable_dataset() if isinstance(loaded, datasets.Dataset) else
                          datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()}))
            return loaded
    kwargs.setdefault("cache_dir", _folder_cache_dir(folder))
    return datasets.load_dataset(str(folder), config, split=split, streaming=streaming, **kwargs)


def _folder_cache_dir(folder: Path) -> str:
    """A datasets cache folder keyed on `folder`'s path and its files' sizes and times. datasets keys the Arrow cache
    of a folder with a README `configs:` section on that README alone, so a rewritten folder (another mirror, other
    rows) would silently load the rows cached from the first one."""
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            stat = f.stat()
            digest.update(f"{f.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "seqnb_folders" / digest.hexdigest()[:16])


def exception_chain(e: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def _dataset_error(dataset_id: str, config: str | None, param: str, revision: str | None,
                   e: BaseException) -> DatasetNotAvailableError:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    chain = exception_chain(e)
    text = " ".join(str(x) for x in chain)
    where = f"dataset {dataset_id!r}" + (f" (config {config!r})" if config else "")
    page = f"https://huggingface.co/datasets/{dataset_id}"
    if "Dataset scripts are no longer supported" in text:
        script = text.split("but found", 1)[1].split()[0] if "but found" in text else "a .py loading script"
        args = ", ".join([repr(dataset_id)] + ([repr(config)] if config else []) + ["revision='refs/convert/parquet'"])
        return DatasetScriptError(
            f"parameter {param!r}: {where} is a script dataset (its hub repo holds {script}), which datasets >= 4 "
            f"no longer runs. Fix: load its Parquet conversion with load_hub_dataset({args}) (adding the id to "
            f"seqnb.tasks.hub.PARQUET_REVISIONS makes that the default), or pass -p {param} with a maintained Parquet "
            f"copy's hub id or a local folder (see {page}).")
    if any(isinstance(x, GatedRepoError) for x in chain) or "is a gated dataset" in text:
        return GatedDatasetError(
            f"parameter {param!r}: {where} is gated on the Hugging Face hub. Fix: accept its conditions on {page} "
            "with your account, then log this machine in with `hf auth login` (or set HF_TOKEN to an access token); "
            f"or pass -p {param} with a local copy.")
    revision_missing = any(isinstance(x, RevisionNotFoundError) for x in chain) or (
        revision and f"Revision '{revision}' doesn't exist" in text)
    if revision_missing:
        return NoSuchDatasetError(
            f"parameter {param!r}: {where} has no revision {revision!r} on the hub. Fix: check the branches on "
            f"{page}/tree/main, or pass another id with -p {param}.")
    if any(isinstance(x, RepositoryNotFoundError) for x in chain) or "doesn't exist on the Hub" in text:
        return NoSuchDatasetError(
            f"parameter {param!r}: the Hugging Face hub has no dataset {dataset_id!r} (or it is private to another "
            f"account). Fix: check the spelling (the id is owner/name, e.g. nyu-mll/glue) and pass the right one "
            f"with -p {param}; for a private dataset log in with `hf auth login` or set HF_TOKEN.")
    return DatasetNotAvailableError(
        f"parameter {param!r}: {where} could not be loaded ({type(e).__name__}: {e}). This machine may be offline. "
        "Fix: on a machine with hub access run "
        f"`python -c \"import datasets; datasets.load_dataset('{dataset_id}'"
        f"{', ' + repr(config) if config else ''}).save_to_disk('DIR')\"`, copy DIR here and pass "
        f"-p {param} DIR (or set HF_HOME to a cache that holds it); or {mirror_note(dataset_id)}.")
