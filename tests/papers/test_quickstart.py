import pytest
import torch

from seqnb.papers.quickstart import experiment as qs
from seqnb.views import PromptExplorer


def test_explorer_shows_the_response_and_bad_input():
    seen = []

    def respond(text):
        seen.append(text)
        if not text:
            raise ValueError("type something")
        return f"<b>{text.upper()}</b>"

    w = PromptExplorer(respond, description="x", placeholder="y")
    assert w.ask("abc") == "<b>ABC</b>" and w.result.value == "<b>ABC</b>"
    assert "type something" in w.ask("") and seen == ["abc", ""]


def test_solve_uses_training_format_and_reads_answer(tiny_cfg):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model, tok = qs.build_model(cfg)
    answer = qs.solve(model, tok, " 7 + 15 ", cfg)
    assert (answer.a, answer.b, answer.prompt) == (7, 15, "07+15=")
    assert answer.correct == (answer.predicted == 22)
    assert "07+15=" in qs.answer_html(answer, cfg.train_digits)
    with pytest.raises(ValueError, match="cannot read"):
        qs.solve(model, tok, "7 plus 15", cfg)
    with pytest.raises(ValueError, match="at most 3 digits"):
        qs.solve(model, tok, "1234+1", cfg)


def test_evaluate_counts_by_length(tiny_cfg):
    cfg = tiny_cfg()
    data = qs.build_data(cfg)
    model, tok = qs.build_model(cfg)
    ev = qs.evaluate(model, tok, data["test"])
    assert list(ev.accuracy_by_length) == [1, 2, 3] and len(ev.predictions) == len(data["test"])
    assert ev.accuracy(range(1, 3)) == pytest.approx((ev.accuracy_by_length[1] + ev.accuracy_by_length[2]) / 2)
