"""The notebook contract, checked on every notebook in notebooks/ (execution itself is `pytest --nbmake`)."""

import ast
import dataclasses
import re
from pathlib import Path

import nbformat
import pytest

from seqnb.papers import notebook_specs

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert any(p.stem == "00_quickstart" for p in NOTEBOOKS)


def test_the_notebooks_make_test_runs_beside_the_unit_tests_train_on_one_thread():
    """`make test` executes ONE_THREAD_NOTEBOOKS on the core the unit tests leave idle: each must be a notebook of
    notebooks/ whose tiny preset trains on one thread (on two, it would compete with the unit tests for the cores:
    the same results, only slower)."""
    from seqnb.papers import resolve_config

    root = Path(__file__).parents[1]
    line = re.search(r"^ONE_THREAD_NOTEBOOKS := (.+)$", (root / "Makefile").read_text(), re.M)
    paths = [root / p for p in line.group(1).split()]
    assert paths and all(p in NOTEBOOKS for p in paths), paths
    for path in paths:
        assert resolve_config(path.stem, "tiny").num_threads == 1, path.stem


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_python3_kernel(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs before commit"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_of_plain_values(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell tagged 'parameters'"
    source = tagged[0].source
    assert 'os.environ.get("SEQNB_PRESET", "tiny")' in source
    names = {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert {"preset", "seed", "output_dir"} <= names
    specs = notebook_specs()
    assert path.stem in specs, f"{path.stem}: add it to seqnb.papers.PAPERS"
    assert f'notebook_config("{path.stem}", globals())' in "".join(c.source for c in nb.cells), "resolve the preset"
    fields = {f.name for f in dataclasses.fields(specs[path.stem].config_cls)}
    assert names - {"config"} <= fields, f"parameters that reach no config field: {names - {'config'} - fields}"
