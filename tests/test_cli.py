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
def test_run_twice_with_same_seed_writes_same_numbers(tmp_path, capsys):
    args = ["-p", "max_steps", "60", "-p", "d_model", "32"]
    for root in ("a", "b"):
        assert main(["run", "00_quickstart", "--output-root", str(tmp_path / root), *args]) == 0
    runs = [tmp_path / r / "00_quickstart" / "tiny-seed0" for r in ("a", "b")]
    first, second = (json.loads((r / "metrics.json").read_text()) for r in runs)
    assert first["results"] == second["results"] and first["config"]["max_steps"] == 60
    assert all((r / name).is_file() for r in runs for name in ("00_quickstart.ipynb", "learning_curves.png"))
    assert "sft" in capsys.readouterr().out
