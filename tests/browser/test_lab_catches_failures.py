"""The browser suite fails when it should: small broken notebooks, written into the demo/ folder that the same
JupyterLab serves, go through the same checks as the real notebooks (`pytest -m browser`)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from interactions import check_prompt_explorer, poke_widgets
from labdriver import Checks, Expectations, problems

pytestmark = pytest.mark.browser


def write_notebook(folder: Path, name: str, cells: list[tuple[str, str]]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                for kind, src in cells]
    path = folder / "demo" / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def run_demo(lab, path: Path, checks: Checks) -> list[str]:
    lab.open(f"demo/{path.name}")
    lab.run_all(timeout=300)
    found = problems(lab.read(), Expectations.of(path), checks)
    lab.screenshot(f"demo-{path.stem}")
    return found


def test_a_notebook_that_raises_fails(lab, lab_server):
    path = write_notebook(lab_server.root, "raises", [
        ("md", "# A notebook that raises\n\nIts equation $e^{i\\pi} + 1 = 0$ renders."),
        ("code", "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0]);"),
        ("code", "raise RuntimeError('a step of the demo failed')"),
        ("code", "print('never reached')"),
    ])
    found = run_demo(lab, path, Checks(ran=True, min_images=1))
    assert any("traceback" in f and "RuntimeError: a step of the demo failed" in f for f in found), found
    assert any("did not run" in f and "[2]" in f for f in found), found
    assert not any("MathJax" in f or "figure" in f or "image" in f for f in found), found  # the rest was fine


def test_a_widget_that_does_not_render_fails(lab, lab_server):
    path = write_notebook(lab_server.root, "broken_widget", [
        ("md", "# A widget whose front-end code is missing"),
        ("code", "import ipywidgets as widgets\nimport traitlets\n\n"
                 "class Missing(widgets.DOMWidget):  # as if its JupyterLab extension were not installed\n"
                 "    _model_module = traitlets.Unicode('seqnb-not-installed').tag(sync=True)\n"
                 "    _model_name = traitlets.Unicode('MissingModel').tag(sync=True)\n"
                 "    _view_module = traitlets.Unicode('seqnb-not-installed').tag(sync=True)\n"
                 "    _view_name = traitlets.Unicode('MissingView').tag(sync=True)\n\n"
                 "Missing()"),
        ("code", "widgets.IntSlider(description='fine')"),
    ])
    found = run_demo(lab, path, Checks(ran=True, min_widgets=2))
    assert any(f.startswith("a widget did not render") for f in found), found
    assert any("1 widget view(s) rendered, expected at least 2" in f for f in found), found
    assert not any("traceback" in f for f in found), found


def test_equations_and_images_that_do_not_render_fail(lab, lab_server):
    path = write_notebook(lab_server.root, "broken_markdown", [
        ("md", "# Broken markdown\n\nA formula with a TeX error: $\\frac{1}{$ and a good one $a^2$.\n\n"
               "![a figure that is not there](missing-figure.png)"),
        ("code", "x = 1"),
    ])
    lab.open(f"demo/{path.name}")
    lab.settle()
    found = problems(lab.read(), Expectations.of(path), Checks())
    lab.screenshot("demo-broken_markdown")
    assert any("MathJax" in f for f in found), found
    assert any("image(s) did not render" in f for f in found), found


def test_a_quickstart_explorer_showing_a_wrong_answer_fails(lab, lab_server):
    """Two PromptExplorers over the same freshly trained (small) quickstart model: one wired as in 00_quickstart,
    one that shows the model's sum plus one. The quickstart check passes the first and fails the second."""
    run_dir = lab_server.runs / "demo_quickstart"
    path = write_notebook(lab_server.root, "wrong_answer", [
        ("md", "# A quickstart explorer that shows a wrong answer"),
        ("code", f"""\
import dataclasses

from seqnb.papers.quickstart import experiment as qs
from seqnb.collate import PadCollator
from seqnb.papers import resolve_config
from seqnb.train import TrainArgs, train
from seqnb.views import PromptExplorer

cfg = resolve_config("00_quickstart", "tiny", output_dir={str(run_dir)!r}, resume=False, max_steps=40, batch_size=16,
                     n_train=640, n_layer=1, d_model=32, n_head=2, lr=3e-3, warmup_steps=0, eval_every=20,
                     ckpt_every=20, log_every=5, train_digits=2, test_digits=3, n_test_per_length=8)
data = qs.build_data(cfg)
model, tokenizer = qs.build_model(cfg)
model = train(model, qs.train_set(data, tokenizer), TrainArgs.from_config(cfg), collate_fn=PadCollator(tokenizer.pad_token_id)).model"""),
        ("code", "right = PromptExplorer(lambda text: qs.answer_html(qs.solve(model, tokenizer, text, cfg), "
                 "cfg.train_digits),\n                       description='a + b', placeholder='12+34')\nright"),
        ("code", "def off_by_one(answer):\n"
                 "    return dataclasses.replace(answer, predicted=(answer.predicted or 0) + 1)\n\n"
                 "wrong = PromptExplorer(lambda text: qs.answer_html(off_by_one(qs.solve(model, tokenizer, text, "
                 "cfg)), cfg.train_digits),\n                       description='a + b', placeholder='12+34')\n"
                 "wrong"),
    ])
    found = run_demo(lab, path, Checks(ran=True, min_widgets=2))
    assert not found, found
    assert check_prompt_explorer(lab, "58+67", run_dir, nth=0) == []
    wrong = check_prompt_explorer(lab, "58+67", run_dir, nth=1)
    lab.screenshot("demo-wrong_answer", lab.widget_with_button("Answer", 1))
    assert len(wrong) == 1 and "for '58+67' the explorer shows" in wrong[0] and "seqnb" in wrong[0], wrong


def test_the_generic_widget_check_fails_on_a_widget_that_does_not_respond(lab, lab_server):
    """What a notebook without its own interaction gets: each widget's controls are changed and its button pressed;
    a box that shows the same afterwards is reported."""
    path = write_notebook(lab_server.root, "dead_widget", [
        ("md", "# Three widget boxes, one of them dead"),
        ("code", "import ipywidgets as widgets\n\n"
                 "pick, go, shown = widgets.Dropdown(options=['a', 'b']), widgets.Button(description='Show'), "
                 "widgets.HTML('nothing yet')\n"
                 "go.on_click(lambda _: setattr(shown, 'value', f'picked {pick.value}'))\n"
                 "widgets.VBox([pick, go, shown])"),
        ("code", "step, out = widgets.IntSlider(value=5, min=0, max=9, description='step'), widgets.Output()\n"
                 "step.observe(lambda change: (out.clear_output(), out.append_stdout(f'at {change.new}')), "
                 "names='value')\n"
                 "widgets.VBox([step, out])"),
        ("code", "widgets.VBox([widgets.Dropdown(options=['x', 'y']), widgets.Button(description='Dead'), "
                 "widgets.HTML('never changes')])"),
    ])
    assert run_demo(lab, path, Checks(ran=True, min_widgets=3)) == []
    found = poke_widgets(lab, lab_server.runs, timeout=4)  # the live boxes answer within a second
    assert found == ["widget box 2: changing its controls did not change what it shows"], found
