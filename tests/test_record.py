import json
import math

import pytest

from seqnb.papers import PAPERS, resolve_config
from seqnb.record import (Claim, ClaimFailed, calibrate, check_claims, claims_table, load_metrics, results_table,
                          write_metrics)

RESULTS = {"mle": {"acc": 0.50, "ppl": 10.0}, "sm": {"acc": 0.56, "ppl": 12.0}}


def claim(**kw):
    base = dict(id="c", text="SM beats MLE", metric="acc", better="higher", baseline="mle", method="sm",
                asserted=True, calibrated_on=(1, 2))
    return Claim(**{**base, **kw})


def test_holds_is_derived_in_the_metric_direction_with_margin():
    assert claim().holds(RESULTS)
    assert claim(margin=0.05).holds(RESULTS) and not claim(margin=0.07).holds(RESULTS)
    assert not claim(metric="ppl", better="lower").holds(RESULTS)
    assert claim(metric="ppl", better="lower", baseline="sm", method="mle").holds(RESULTS)
    with pytest.raises(KeyError, match="nope"):
        claim(method="nope").holds(RESULTS)
    with pytest.raises(ValueError):
        claim(better="bigger")


def test_write_metrics_has_the_contract_shape(tmp_path):
    cfg = resolve_config("00_quickstart", output_dir=str(tmp_path))
    c = claim(paper={"baseline": 0.4, "method": 0.6}, asserted=False)
    path = write_metrics(cfg, runtime_s=1.234, results=RESULTS, claims=[c], device="cpu")
    doc = json.loads(path.read_text())
    assert path == tmp_path / "metrics.json"
    assert {"notebook", "preset", "seed", "device", "runtime_s", "results", "claims"} <= set(doc)
    assert doc["notebook"] == "00_quickstart" and doc["seed"] == 0 and doc["runtime_s"] == 1.23
    (written,) = doc["claims"]
    assert written["holds"] is True and written["asserted"] is False and written["paper"]["method"] == 0.6
    assert set(written) >= {"id", "text", "metric", "better", "baseline", "method", "paper"}
    table = claims_table(load_metrics(tmp_path))
    assert table.loc[0, "holds here"] and table.loc[0, "method"] == "sm" and table.loc[0, "ours method"] == 0.56
    assert results_table(doc).loc["sm", "ppl"] == 12.0


def test_an_asserted_claim_that_does_not_hold_fails_the_run_and_an_unasserted_one_never_does(tmp_path):
    cfg = resolve_config("00_quickstart", output_dir=str(tmp_path))
    holds, misses_margin = claim(id="holds", margin=0.05), claim(id="misses", margin=0.07)
    wrong_way = claim(id="wrong-way", metric="ppl", better="lower")  # sm's ppl is higher: fails
    shown_only = claim(id="shown-only", metric="ppl", better="lower", asserted=False)
    check_claims(load_metrics(write_metrics(cfg, runtime_s=1, results=RESULTS, claims=[holds, shown_only],
                                            device="cpu")))
    metrics = load_metrics(write_metrics(cfg, runtime_s=1, results=RESULTS, device="cpu",
                                         claims=[holds, misses_margin, wrong_way, shown_only]))
    with pytest.raises(ClaimFailed, match="2 asserted claim") as failure:
        check_claims(metrics)
    message = str(failure.value)
    assert "misses: sm acc = 0.56 vs mle 0.5, needs higher by at least 0.07" in message
    assert "wrong-way: sm ppl = 12 vs mle 10, needs lower" in message
    assert "shown-only" not in message and "holds:" not in message
    # whether a claim holds is derived from results again, not read from the stored flag
    metrics["claims"][0]["holds"] = False
    metrics["results"]["sm"]["acc"] = 0.40
    with pytest.raises(ClaimFailed, match="(?s)3 asserted claim.*holds: sm acc = 0.4 vs mle 0.5"):
        check_claims(metrics)


def test_an_asserted_claim_needs_its_calibration_seeds():
    with pytest.raises(ValueError, match="'c' is asserted but names no calibration seeds"):
        claim(calibrated_on=())
    assert not Claim("c", "t", "acc", "mle", "sm").asserted  # a claim nobody calibrated is only shown
    assert claim(calibrated_on=[3, 4]).calibrated_on == (3, 4)  # as read back from metrics.json


def test_calibration_asserts_a_consistent_gain_with_half_the_smallest_gain_as_margin(tmp_path, capsys):
    def run(seed, sm, seeds=None):
        cfg = resolve_config("00_quickstart", seed=seed, output_dir=str(tmp_path / str(seed)))
        results = {"mle": {"acc": 0.5, "ppl": 10.0, "f1": 0.5}, "sm": dict(zip(("acc", "ppl", "f1"), sm))}
        claims = [claim(id="acc"), claim(id="ppl", metric="ppl", better="lower", asserted=False),
                  claim(id="f1", metric="f1", asserted=False)]
        return write_metrics(cfg, runtime_s=1, results=results, claims=claims, device="cpu",
                             extra={"seeds": seeds} if seeds else None)

    # gains: acc .165 / .1 / .2 (consistent); ppl 1 / -.5 / 3 (one seed loses); f1 .8 / .01 / .02 (all positive,
    # but the mean .277 is below twice the spread, 2 x .453)
    paths = [run(1, (0.665, 9.0, 1.3)), run(2, (0.60, 10.5, 0.51)), run(3, (0.70, 7.0, 0.52), seeds=[3, 4])]
    table = calibrate([load_metrics(p) for p in paths])
    assert table.attrs["seeds"] == [1, 2, 3, 4]
    assert list(table.filter(like="seed ").columns) == ["seed 1", "seed 2", "seed 3,4"]
    acc, ppl, f1 = table.loc["acc"], table.loc["ppl"], table.loc["f1"]
    assert acc["seed 1"] == pytest.approx(0.165) and acc["smallest gain"] == pytest.approx(0.1)
    assert acc["mean gain"] == pytest.approx(0.155) and acc["gain std"] == pytest.approx(0.05074, abs=1e-5)
    assert acc["assert"] and acc["margin"] == 0.05 and acc["margin now"] == 0.0 and acc["asserted now"]
    assert ppl["seed 1"] == 1.0 and ppl["seed 2"] == -0.5 and ppl["seed 3,4"] == 3.0
    assert not ppl["assert"] and ppl["margin"] == 0.0  # one seed goes the other way: not asserted
    assert f1["smallest gain"] > 0 and not f1["assert"] and f1["margin"] == 0.0  # too noisy to assert
    assert calibrate([load_metrics(p) for p in paths[::2]]).loc["acc", "margin"] == 0.08  # 0.0825 rounds down
    with pytest.raises(ValueError, match="two or more seeds"):
        calibrate([load_metrics(paths[0])])
    with pytest.raises(ValueError, match="include seed 0"):
        calibrate([load_metrics(run(0, (0.9, 9.0, 0.9))), load_metrics(paths[0])])

    from seqnb.cli import main

    assert main(["calibrate", *map(str, paths)]) == 0
    assert "calibration seeds [1, 2, 3, 4]" in capsys.readouterr().out
    assert main(["calibrate", str(tmp_path / "0"), str(paths[0])]) == 2 and "seed 0" in capsys.readouterr().err


def test_non_numbers_are_refused(tmp_path):
    cfg = resolve_config("00_quickstart", output_dir=str(tmp_path))
    for bad in (math.nan, "0.5", None):
        with pytest.raises(ValueError, match="finite number"):
            write_metrics(cfg, runtime_s=1, results={"a": {"acc": bad}}, device="cpu")


def test_measured_once_keeps_what_a_reload_cannot_measure(tmp_path):
    from seqnb.record import measured_once

    path = tmp_path / "costs" / "arm.json"
    assert measured_once(path, None) == {}  # never trained whole: nothing to report
    assert measured_once(path, {"train_s": 1.5, "train_tokens": 10}) == {"train_s": 1.5, "train_tokens": 10}
    assert measured_once(path, None) == {"train_s": 1.5, "train_tokens": 10}  # a reload reads it back


class _Every(dict):
    """Results with every variant and metric: each notebook's claims() lists all it can make."""

    def __contains__(self, key):
        return True

    def get(self, key, default=None):
        return _Every()


@pytest.mark.parametrize("notebook", sorted(PAPERS))
def test_only_the_tiny_preset_asserts_and_never_on_the_default_runs_seeds(notebook, tmp_path):
    import inspect

    from seqnb.papers import paper_module

    claims_of = paper_module(notebook, "experiment").claims
    for preset in paper_module(notebook, "config").SPEC.presets:
        cfg = resolve_config(notebook, preset, output_dir=str(tmp_path), device="cpu")
        claims = claims_of(cfg, _Every()) if len(inspect.signature(claims_of).parameters) == 2 else claims_of(cfg)
        asserted = [c for c in claims if c.asserted]
        if preset != "tiny":
            assert claims and not asserted and not any(c.margin for c in claims), preset
            continue
        default_seeds = set(getattr(cfg, "seeds", range(cfg.seed, cfg.seed + getattr(cfg, "n_seeds", 1))))
        assert asserted and all(c.margin > 0 and not default_seeds & set(c.calibrated_on) for c in asserted)


def test_section_times_sum_papermill_durations_under_each_heading_and_fill_the_readme_block(tmp_path):
    from seqnb.record import TIMINGS_END, TIMINGS_START, section_times, timings_table, write_timings

    def code(seconds):
        return {"cell_type": "code", "source": [], "metadata": {"papermill": {"duration": seconds}}}

    def md(text):
        return {"cell_type": "markdown", "source": [text], "metadata": {}}

    notebook = {"cells": [md("# Title\n\nintro"), code(1.5), md("## Data\n"), code(0.25), code(0.5),
                          md("Prose without a heading stays in its section"), code(2.0), md("## Arms, one budget"),
                          code(40.0), {"cell_type": "code", "source": [], "metadata": {}}]}
    times = section_times(notebook)
    assert times == {"setup": 1.5, "Data": 2.75, "Arms, one budget": 40.0} and list(times) == ["setup", "Data",
                                                                                                  "Arms, one budget"]
    arms = {"a": {"train_s": 30.0, "eval_s": 4.0, "steps": 10}, "b": {"train_s": 5.4, "eval_s": 0.3, "steps": 10}}
    runs = [{"notebook": "01_b", "preset": "tiny", "seed": 0, "runtime_s": 44.2, "phases_s": times,
             "train_runs_s": arms},
            {"notebook": "00_a", "preset": "tiny", "seed": 0, "runtime_s": 9.0, "phases_s": {"setup": 3.0}}]
    table = timings_table(runs, top=2)
    assert table.splitlines()[2:] == ["| 00_a (tiny, seed 0) | 9 | setup 3 | - |",
                                      "| 01_b (tiny, seed 0) | 44 | Arms, one budget 40; Data 3 | 2: 35 / 4 |"]
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{TIMINGS_START}\nold table\n{TIMINGS_END}\nafter\n")
    write_timings(readme, table)
    assert readme.read_text() == f"before\n{TIMINGS_START}\n{table}\n{TIMINGS_END}\nafter\n"
    readme.write_text("no block")
    with pytest.raises(ValueError, match="timings block"):
        write_timings(readme, table)


def test_every_training_run_records_its_training_and_evaluation_time(tiny_cfg):
    from seqnb.papers.quickstart import experiment as qs
    from seqnb.collate import PadCollator
    from seqnb.train import TIMINGS, TrainArgs, train
    import time

    cfg = tiny_cfg(max_steps=4, eval_every=2)
    data = qs.build_data(cfg)
    model, tok = qs.build_model(cfg)

    def slow_eval(m):
        time.sleep(0.2)
        return {"x": 1.0}

    train(model, qs.train_set(data, tok), TrainArgs.from_config(cfg), collate_fn=PadCollator(tok.pad_token_id),
          evaluate=slow_eval, name="timed")
    assert TIMINGS["timed"]["steps"] == 4 and 0.4 <= TIMINGS["timed"]["eval_s"] < 1.0
    assert TIMINGS["timed"]["train_s"] > 0
    train(model, qs.train_set(data, tok), TrainArgs.from_config(cfg), collate_fn=PadCollator(tok.pad_token_id),
          evaluate=slow_eval, name="timed")  # finished: reloads, trains nothing
    assert TIMINGS["timed"]["steps"] == 0 and TIMINGS["timed"]["eval_s"] == 0
