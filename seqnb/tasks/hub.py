"""Hub datasets for the paper presets, loaded by id (or from a local folder) with a clear offline error."""

from __future__ import annotations

from pathlib import Path

import datasets


class DatasetNotAvailableError(RuntimeError):
    """A dataset is neither a local folder nor in the local Hugging Face cache."""


def load_hub_dataset(
    dataset_id: str, config: str | None = None, *, split: str | None = None, param: str = "dataset_id", **kwargs
) -> datasets.DatasetDict | datasets.Dataset:
    """`datasets.load_dataset`, accepting a hub id or a local folder (json/csv/parquet files or a saved dataset).

    `param` is the notebook parameter that named the dataset, so the error can say what to change.
    """
    path = Path(dataset_id).expanduser()
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "dataset_info.json")):
        loaded = datasets.load_from_disk(str(path))
        return loaded[split] if split else loaded
    try:
        return datasets.load_dataset(str(path) if path.is_dir() else dataset_id, config, split=split, **kwargs)
    except (ConnectionError, FileNotFoundError, OSError, ValueError) as e:
        if path.is_dir():
            raise
        raise DatasetNotAvailableError(
            f"parameter {param!r}: dataset {dataset_id!r} could not be loaded ({type(e).__name__}: {e}). "
            "This machine may be offline. Fix: on a machine with hub access run "
            f"`python -c \"import datasets; datasets.load_dataset('{dataset_id}'"
            f"{', ' + repr(config) if config else ''}).save_to_disk('DIR')\"`, copy DIR here and pass "
            f"-p {param} DIR (or set HF_HOME to a cache that holds it)."
        ) from e
