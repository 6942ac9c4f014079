"""Every notebook in notebooks/, opened in JupyterLab in Chromium the way a reader does (`pytest -m browser`).

* opened cold: headings and every equation render (MathJax), the parameters cell is first, no output is stored;
* then Run ▸ Run All Cells at the tiny preset: no traceback, every cell ran, figures render, widget views render, and
  the explorer responds (`interactions.py`). 00_quickstart always trains in the browser. The other notebooks reuse
  a finished tiny run of the same settings when one exists in $SEQNB_RUNS (else runs/) — `make test` points that
  at the runs nbmake just made — so their training loops reload the checkpoint (the notebooks' documented
  resume) while every cell still runs; without one they are skipped locally (SEQNB_BROWSER_FULL=1 trains them in
  the browser instead) and trained in the browser in CI.
"""

from __future__ import annotations

import os
import re

import pytest
from interactions import INTERACTIONS, poke_widgets
from labdriver import IN_CI, NOTEBOOKS, Checks, Expectations, copy_finished_runs, problems

pytestmark = pytest.mark.browser
TRAIN_IN_BROWSER = os.environ.get("SEQNB_BROWSER_FULL", "").strip().lower() in ("1", "true", "yes")


def cold_problems(lab, path, expect: Expectations) -> list[str]:
    """The notebook as it opens: rendered headings and equations, the parameters cell first, no stored output."""
    lab.wait_math(expect.math)
    state = lab.read()
    found = problems(state, expect, Checks())
    codes = state.code_cells
    if expect.parameters_cell is None or not codes or "SEQNB_PRESET" not in codes[0]["input"]:
        found.append("the first code cell on the page is not the parameters cell (preset = ...SEQNB_PRESET...)")
    if state.outputs:
        found.append(f"the notebook opens with {len(state.outputs)} stored outputs")
    lab.screenshot(f"{path.stem}-cold")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_in_lab(lab, lab_server, reuse_runs, path):
    expect = Expectations.of(path)
    lab.open(f"notebooks/{path.name}")
    cold = cold_problems(lab, path, expect)
    assert not cold, f"{path.name} opened cold:\n" + "\n".join(cold)

    if path.stem != "00_quickstart":
        reused = copy_finished_runs(reuse_runs, lab_server.runs, path.stem)
        if not reused and not (IN_CI or TRAIN_IN_BROWSER):
            pytest.skip(f"opened cold fine; Run All skipped: no finished tiny run of {path.stem} in {reuse_runs} to "
                        "reuse. Run `make run` or `make test` first, or set SEQNB_BROWSER_FULL=1 to train it in the "
                        "browser (minutes)")
    code = "\n".join(expect.code_cells)
    checks = Checks(ran=True, min_images=1 if re.search(r"save_figure\(|plt\.", code) else 0,
                    min_widgets=1 if re.search(r"Explorer\(|Slider\(|ipywidgets", code) else 0)
    seconds = lab.run_all(timeout=900)
    found = problems(lab.read(), expect, checks)
    try:
        if not found:
            found += INTERACTIONS.get(path.stem, poke_widgets)(lab, lab_server.runs)
        found += [f"JavaScript error on the page: {e}" for e in lab.errors]
    finally:
        lab.screenshot(path.stem if found or path.stem not in INTERACTIONS else f"{path.stem}-end")
    print(f"{path.stem}: Run All took {seconds:.0f} s")
    assert not found, f"{path.name} after Run All ({seconds:.0f} s):\n" + "\n".join(found)
