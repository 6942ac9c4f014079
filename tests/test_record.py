import json
import math

import pytest

from seqnb.papers import resolve_config
from seqnb.record import Claim, claims_table, load_metrics, results_table, write_metrics

RESULTS = {"mle": {"acc": 0.50, "ppl": 10.0}, "sm": {"acc": 0.56, "ppl": 12.0}}


def claim(**kw):
    base = dict(id="c", text="SM beats MLE", metric="acc", better="higher", baseline="mle", method="sm")
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
