"""Fixtures of the browser suite: one `jupyter lab` and one Chromium per session, a fresh tab per test.

Selected with `pytest -m browser`; any other run skips these tests. Without Chromium (or playwright/jupyterlab) the
suite is skipped with a message saying what to install, except in CI (`CI` set to true), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from labdriver import (CHROMIUM_ARGS, IN_CI, NOTEBOOKS, ROOT, LabPage, LabServer, find_chromium,
                       missing_requirement)

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    selected = "browser" in (config.option.markexpr or "")
    for item in items:
        if HERE not in Path(str(item.path)).parents:
            continue
        item.add_marker(pytest.mark.browser)
        if not selected:
            item.add_marker(pytest.mark.skip(
                reason="browser suite (JupyterLab in Chromium, a few minutes): run it with `pytest -m browser`"))


@pytest.fixture(scope="session")
def lab_requirements():
    why = missing_requirement()
    if why:
        if IN_CI:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


@pytest.fixture(scope="session")
def reuse_runs() -> Path:
    """Where finished tiny runs may be copied from: $SEQNB_RUNS (set by `make test` to nbmake's runs), else runs/."""
    return Path(os.environ.get("SEQNB_RUNS") or ROOT / "runs")


@pytest.fixture(scope="session")
def lab_server(lab_requirements, tmp_path_factory):
    """`jupyter lab` over a temporary root holding copies of notebooks/ (so nothing is written back) and demo/
    (notebooks the failure tests write); its kernels write runs to a temporary SEQNB_RUNS."""
    base = tmp_path_factory.mktemp("lab")
    root, runs, state = base / "root", base / "runs", base / "state"
    (root / "notebooks").mkdir(parents=True)
    (root / "demo").mkdir()
    runs.mkdir()
    for path in NOTEBOOKS:
        shutil.copy2(path, root / "notebooks" / path.name)
    server = LabServer(root, runs, state)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(runs, ignore_errors=True)  # copied and fresh checkpoints (hundreds of MB); screenshots stay


@pytest.fixture(scope="session")
def browser(lab_requirements):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def lab(browser, lab_server):
    """A fresh Chromium tab on the session's JupyterLab; its kernels are shut down afterwards."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        yield LabPage(page, lab_server)
    finally:
        context.close()
        lab_server.shutdown_kernels(wait=False)
