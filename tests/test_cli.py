import json

import pytest

from seqnb.cli import main, parse_value


def test_parse_value():
    assert [parse_value(v) for v in ("3", "0.5", "True", "None", "gpt2", "'x'")] == [3, 0.5, True, None, "gpt2", "x"]
    assert parse_value("(1, 2)") == [1, 2] and parse_value("()") == []  # lists survive papermill, tuples do not


def test_list_shows_notebooks_and_presets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "00_quickstart" in out and "tiny, paper" in out


def test_unknown_parameter_or_notebook_is_refused(capsys, tmp_path):
    assert main(["run", "00_quickstart", "--output-root", str(tmp_path), "-p", "max_stepz", "3"]) == 2
    assert "max_stepz" in capsys.readouterr().err
    assert main(["run", "99_missing", "--output-root", str(tmp_path)]) == 2


@pytest.mark.slow
def test_a_run_is_deterministic_and_one_whose_asserted_claim_fails_exits_non_zero(tmp_path, capsys):
    """60 steps of a narrow model (a broken recipe) cannot learn addition: the asserted claim fails the run, after
    metrics.json and the figures are written, and two runs under one seed write the same numbers."""
    args = ["-p", "max_steps", "60", "-p", "d_model", "32"]
    for root in ("a", "b"):
        assert main(["run", "00_quickstart", "--output-root", str(tmp_path / root), *args]) == 1
    runs = [tmp_path / r / "00_quickstart" / "tiny-seed0" for r in ("a", "b")]
    first, second = (json.loads((r / "metrics.json").read_text()) for r in runs)
    assert first["results"] == second["results"] and first["config"]["max_steps"] == 60
    assert [(c["id"], c["asserted"], c["holds"]) for c in first["claims"]] == [("sft-learns-addition", True, False)]
    assert all((r / name).is_file() for r in runs for name in ("00_quickstart.ipynb", "learning_curves.png"))
    out, err = capsys.readouterr()
    assert "sft" in out and "ClaimFailed" not in out
    assert "1 asserted claim(s) of 00_quickstart (tiny, seed 0) do not hold" in err and "sft-learns-addition" in err
