"""Drive JupyterLab in Chromium the way a reader does, and read what the page shows.

`LabServer` runs `jupyter lab` on 127.0.0.1 (free port, random token, throwaway settings/workspace/runtime folders,
the project's Python as the kernel) over a temporary root folder. `LabPage` opens a notebook by URL, uses the Run
menu, waits for the kernel and reads the page; `problems()` turns what it read into a list of human-readable
failures (empty when the notebook renders, ran and shows its widgets). The tests in this folder, including the
ones that show the suite failing on broken notebooks, all go through these same functions.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import nbformat

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SCREENSHOTS = ROOT / "runs" / "browser"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

# Debian's chromium; the background-networking flags keep it from dialling out (connections get refused in bursts
# on a machine without internet, which stalls page loads).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
MISSING_MESSAGE = (
    "the browser suite needs Chromium ({why}). Install it with `apt-get install chromium` (Debian/Ubuntu) or point "
    "SEQNB_CHROMIUM at a Chromium/Chrome binary, and `pip install -e '.[dev,lab]'` for playwright and jupyterlab"
)


def find_chromium() -> str | None:
    explicit = os.environ.get("SEQNB_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_requirement() -> str | None:
    """Why the browser suite cannot run here, or None."""
    for module, package in (("playwright.sync_api", "playwright"), ("jupyterlab", "jupyterlab")):
        try:
            __import__(module)
        except ImportError:
            return MISSING_MESSAGE.format(why=f"and the Python package {package}, which is not installed")
    if find_chromium() is None:
        explicit = os.environ.get("SEQNB_CHROMIUM")
        return MISSING_MESSAGE.format(why=f"SEQNB_CHROMIUM={explicit} is not a file" if explicit else
                                      "no chromium, chromium-browser or google-chrome on PATH")
    return None


# ----------------------------------------------------------------------------------------------------------------
# The server

# Settings a reader would not change, but a test needs: every cell in the DOM (no virtual scrolling, so the page can
# be read top to bottom), no autosave (nothing is written back), no news or update checks (no network).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """`jupyter lab` serving `root`, its kernels writing runs under `runs`; `state` holds its throwaway folders."""

    def __init__(self, root: Path, runs: Path, state: Path):
        self.root, self.runs, self.state = root, runs, state
        self.token = secrets.token_hex(16)
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = state / "jupyter-lab.log"
        self._closing: threading.Thread | None = None  # the last shutdown_kernels(wait=False)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The kernel must get matplotlib's inline backend, as a reader's does: ipykernel only picks it when
        # MPLBACKEND is unset (the Makefile and tests/conftest.py set Agg for headless runs).
        env.pop("MPLBACKEND", None)
        env.update(
            SEQNB_RUNS=str(self.runs), SEQNB_PRESET="tiny", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
            JUPYTERLAB_SETTINGS_DIR=str(self.state / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(self.state / "workspaces"),
            JUPYTER_RUNTIME_DIR=str(self.state / "runtime"), JUPYTER_CONFIG_DIR=str(self.state / "config"),
            JUPYTER_DATA_DIR=str(self.state / "data"),  # no user kernelspecs: python3 is this interpreter
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        return env

    def start(self, timeout: float = 120) -> "LabServer":
        for name, values in LAB_SETTINGS.items():
            path = self.state / "settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            log = self.log_path.open("ab")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
                 f"--port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                 f"--ServerApp.root_dir={self.root}", "--LabApp.extension_manager=readonly",
                 "--LabApp.news_url=None"],
                cwd=self.root, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            log.close()
            deadline = time.time() + timeout
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    self.api("GET", "/api/status")
                    return self
                except (urllib.error.URLError, ConnectionError, OSError):
                    time.sleep(0.5)
            if self.proc.poll() is None:
                self.stop()
                raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f} s; log: {self.log_tail()}")
        raise RuntimeError(f"jupyter lab would not start; log: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def api(self, method: str, path: str) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def url(self, path: str) -> str:
        """The notebook's address, as a reader opens it; `reset` starts from an empty workspace."""
        return f"http://127.0.0.1:{self.port}/lab/tree/{path}?reset&token={self.token}"

    def shutdown_kernels(self, wait: bool = True) -> None:
        """Shut down the sessions and kernels the server runs now. `wait=False` sends the requests from a thread
        and returns: a kernel that loaded torch takes one or two seconds to exit, while the next test opens its
        page (`stop` waits for it)."""
        try:
            paths = ([f"/api/sessions/{s['id']}" for s in self.api("GET", "/api/sessions")] +
                     [f"/api/kernels/{k['id']}" for k in self.api("GET", "/api/kernels")])
        except (urllib.error.URLError, OSError):
            return

        def delete() -> None:
            for path in paths:
                try:
                    self.api("DELETE", path)
                except (urllib.error.URLError, OSError):  # a session's kernel is gone with its session: 404
                    pass

        if wait:
            delete()
        else:
            self._closing = threading.Thread(target=delete, daemon=True)
            self._closing.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self._closing is not None:
            self._closing.join(60)
        if self.proc.poll() is None:
            self.shutdown_kernels()
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._kill_stray_kernels()
        self.proc = None

    def _kill_stray_kernels(self) -> None:
        """Kernels run in their own process groups: end any still holding a connection file in our runtime dir."""
        marker = str(self.state / "runtime").encode()
        strays = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if marker in (proc / "cmdline").read_bytes():
                    strays.append(int(proc.name))
            except OSError:
                continue
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in strays:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if sig == signal.SIGTERM and strays:
                time.sleep(3)


# ----------------------------------------------------------------------------------------------------------------
# What the notebook file says the page should show


def markdown_math_count(source: str) -> int:
    """TeX expressions in a markdown cell the way JupyterLab finds them: $$..$$, $..$, \\(..\\), \\[..\\] and
    \\begin{..}..\\end{..}, outside code."""
    text = re.sub(r"```.*?```", "", source, flags=re.S)
    text = re.sub(r"(`+)(?:(?!\1).)+?\1", "", text, flags=re.S)
    text = text.replace(r"\$", "")
    pattern = re.compile(r"\$\$.+?\$\$|\$[^$\n]+?\$|\\\(.+?\\\)|\\\[.+?\\\]|\\begin\{(\w+\*?)\}.+?\\end\{\1\}",
                         flags=re.S)
    return len(pattern.findall(text))


def markdown_headings(source: str) -> list[str]:
    text = re.sub(r"```.*?```", "", source, flags=re.S)
    return [m.group(1).strip() for m in re.finditer(r"^#{1,3}\s+(.+?)\s*#*\s*$", text, flags=re.M)]


@dataclass
class Expectations:
    headings: list[str]
    math: int
    code_cells: list[str]  # sources, in order
    parameters_cell: str | None

    @classmethod
    def of(cls, path: Path) -> "Expectations":
        nb = nbformat.read(path, as_version=4)
        md = [c.source for c in nb.cells if c.cell_type == "markdown"]
        code = [c for c in nb.cells if c.cell_type == "code"]
        params = next((c.source for c in code if "parameters" in c.metadata.get("tags", [])), None)
        return cls(headings=[h for s in md for h in markdown_headings(s)],
                   math=sum(markdown_math_count(s) for s in md), code_cells=[c.source for c in code],
                   parameters_cell=params)


def heading_words(heading: str) -> str:
    """A heading's words without math, markup or spaces, comparable between markdown source and rendered page."""
    text = re.sub(r"\$\$.+?\$\$|\$[^$]+\$", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[`*_\s¶]", "", html.unescape(re.sub(r"<[^>]+>", "", text)))
    return text


def plain(fragment: str) -> str:
    """An HTML fragment as the text a browser shows, whitespace collapsed."""
    text = html.unescape(re.sub(r"<[^>]+>", "", fragment))
    return " ".join(text.split())


# ----------------------------------------------------------------------------------------------------------------
# The page

_READ_PAGE = """() => {
  const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  if (!nb) return null;
  const all = (el, s) => [...el.querySelectorAll(s)];
  const text = el => (el.innerText || el.textContent || '');
  const cells = all(nb, '.jp-Cell').map(cell => {
    const code = cell.classList.contains('jp-CodeCell');
    const prompt = cell.querySelector('.jp-InputArea-prompt');
    const outputs = all(cell, '.jp-OutputArea-output').map(o => {
      const widget = o.classList.contains('jupyter-widgets') || !!o.querySelector('.jupyter-widgets')
                     || /Loading widget|Error displaying widget/.test(text(o));
      return {mime: o.getAttribute('data-mime-type'), text: text(o).slice(0, 4000), widget,
              widget_error: !!o.querySelector('.jupyter-widgets-error-widget')
                            || /Error displaying widget/.test(text(o)),
              widget_loading: /Loading widget/.test(text(o))};
    });
    const images = all(cell, '.jp-OutputArea-output img, .jp-RenderedMarkdown img').map(
      i => ({src: (i.getAttribute('src') || '').slice(0, 80), width: i.naturalWidth, complete: i.complete}));
    return {code, prompt: prompt ? prompt.textContent.trim() : '',
            input: code ? text(cell.querySelector('.jp-InputArea-editor') || cell) : '',
            markdown_rendered: !code ? !!cell.querySelector('.jp-RenderedMarkdown') : null,
            outputs, images};
  });
  const md = all(nb, '.jp-RenderedMarkdown');
  return {
    cells,
    headings: md.flatMap(m => all(m, 'h1, h2, h3').map(h => {
      const copy = h.cloneNode(true);  // the words of the heading; its equations are checked separately
      copy.querySelectorAll('mjx-container, .jp-InternalAnchorLink').forEach(e => e.remove());
      return copy.textContent.trim();
    })),
    math: md.reduce((n, m) => n + m.querySelectorAll('mjx-container').length, 0),
    math_errors: md.reduce((n, m) => n + m.querySelectorAll('mjx-merror, .MathJax_Error').length, 0),
    kernel: text(document.querySelector('#jp-main-statusbar') || document.body).replace(/\\s+/g, ' '),
  };
}"""


@dataclass
class PageState:
    cells: list[dict]
    headings: list[str]
    math: int
    math_errors: int
    kernel: str

    @property
    def code_cells(self) -> list[dict]:
        return [c for c in self.cells if c["code"]]

    @property
    def outputs(self) -> list[dict]:
        return [o for c in self.cells for o in c["outputs"]]

    @property
    def images(self) -> list[dict]:
        return [i for c in self.cells for i in c["images"]]

    @property
    def widgets(self) -> list[dict]:
        return [o for o in self.outputs if o["widget"]]


@dataclass
class Checks:
    """What `problems` requires of a page."""

    ran: bool = False  # Run All was used: every code cell must show an execution count
    min_images: int = 0
    min_widgets: int = 0
    extra: list[str] = field(default_factory=list)


def problems(state: PageState, expect: Expectations, checks: Checks) -> list[str]:
    """Everything a reader would see as broken, as sentences; empty when the page is fine."""
    found = []
    # headings and equations
    shown = {heading_words(x) for x in state.headings}
    missing = [h for h in expect.headings if heading_words(h) not in shown]
    if missing:
        found.append(f"headings not rendered: {missing[:5]}")
    if not all(c["markdown_rendered"] for c in state.cells if not c["code"]):
        found.append("a markdown cell is shown as source, not rendered")
    if state.math < expect.math:
        found.append(f"MathJax rendered {state.math} of the {expect.math} equations in the markdown")
    if state.math_errors:
        found.append(f"MathJax shows {state.math_errors} TeX error(s)")
    # execution
    codes = state.code_cells
    if len(codes) != len(expect.code_cells):
        found.append(f"the page shows {len(codes)} code cells, the notebook has {len(expect.code_cells)}")
    busy = [i for i, c in enumerate(codes) if "*" in c["prompt"]]
    if busy:
        found.append(f"code cells {busy} still running ([*])")
    if checks.ran:
        not_run = [i for i, (c, src) in enumerate(zip(codes, expect.code_cells, strict=False))
                   if src.strip() and not re.fullmatch(r"\[\d+\]:", c["prompt"])]
        if not_run:
            found.append(f"code cells {not_run} did not run (Run All stops at an error)")
    for i, c in enumerate(codes):
        for o in c["outputs"]:
            if o["mime"] == "application/vnd.jupyter.error" or "Traceback (most recent call last)" in o["text"]:
                last = [ln.strip() for ln in o["text"].splitlines() if ln.strip()] or [""]
                found.append(f"code cell {i} shows a traceback ending in: {last[-1][:300]}")
    # figures
    broken = [i["src"] for i in state.images if not i["complete"] or i["width"] == 0]
    if broken:
        found.append(f"{len(broken)} image(s) did not render: {broken[:3]}")
    shown = len(state.images) - len(broken)
    if shown < checks.min_images:
        found.append(f"{shown} figure(s) rendered, expected at least {checks.min_images}")
    # widgets
    for o in state.widgets:
        if o["widget_error"]:
            found.append(f"a widget did not render: {o['text'].strip()[:200] or 'error view'}")
        elif o["widget_loading"]:
            found.append("a widget never finished loading (Loading widget...)")
    rendered = [o for o in state.widgets if not o["widget_error"] and not o["widget_loading"]]
    if len(rendered) < checks.min_widgets:
        found.append(f"{len(rendered)} widget view(s) rendered, expected at least {checks.min_widgets}")
    return found + checks.extra


class LabPage:
    """One notebook open in JupyterLab in a Chromium tab."""

    def __init__(self, page, server: LabServer):
        self.page, self.server = page, server
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, path: str, timeout: float = 90) -> "LabPage":
        self.page.goto(self.server.url(path), wait_until="domcontentloaded", timeout=timeout * 1000)
        self.page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=timeout * 1000)
        self.wait_kernel_idle(timeout)
        return self

    def wait_kernel_idle(self, timeout: float = 90) -> None:
        self.page.wait_for_function(
            """() => /\\|\\s*Idle/.test((document.querySelector('#jp-main-statusbar') || {}).innerText || '')""",
            timeout=timeout * 1000)

    def wait_math(self, n: int, timeout: float = 30) -> None:
        """Until MathJax has typeset `n` equations in the rendered markdown (problems() reports a shortfall)."""
        try:
            self.page.wait_for_function(
                "n => [...document.querySelectorAll('.jp-RenderedMarkdown mjx-container')].length >= n", arg=n,
                timeout=timeout * 1000, polling=250)
        except Exception:  # noqa: BLE001
            pass
        self.settle(5)

    def menu(self, menu: str, item: str) -> None:
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{re.escape(menu)}$")).click()
        self.page.get_by_role("menuitem", name=item, exact=True).click()

    def run_all(self, timeout: float = 900) -> float:
        """Run ▸ Run All Cells, then wait until no cell shows [*] and the kernel is idle; returns seconds."""
        start = time.time()
        self.menu("Run", "Run All Cells")
        try:  # the cells queue at once; a notebook too fast to catch in [*] is fine
            self.page.wait_for_function(
                """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
                          .some(p => p.textContent.includes('*') || /\\d/.test(p.textContent))""", timeout=15000)
        except Exception:  # noqa: BLE001  (playwright's TimeoutError): problems() reports cells that did not run
            pass
        self.page.wait_for_function(
            """() => ![...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
                      .some(p => p.textContent.includes('*'))""", timeout=timeout * 1000, polling=500)
        self.wait_kernel_idle(60)
        self.settle()
        return time.time() - start

    def settle(self, timeout: float = 30) -> None:
        """Let widget views and images finish loading (a view that never loads is reported by problems())."""
        try:
            self.page.wait_for_function(
                """() => ![...document.querySelectorAll('.jp-OutputArea-output')]
                           .some(o => /Loading widget/.test(o.innerText || ''))
                         && [...document.querySelectorAll('.jp-OutputArea-output img')].every(i => i.complete)""",
                timeout=timeout * 1000, polling=250)
        except Exception:  # noqa: BLE001
            pass
        self.page.wait_for_timeout(500)

    def read(self) -> PageState:
        data = self.page.evaluate(_READ_PAGE)
        if data is None:
            raise AssertionError("no notebook is shown")
        return PageState(**data)

    def screenshot(self, name: str, locator=None) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        if locator is not None:
            try:  # the widget in the middle of the view, with what leads to it above
                locator.evaluate("e => e.scrollIntoView({block: 'center'})", timeout=5000)
                self.page.wait_for_timeout(300)
            except Exception:  # noqa: BLE001
                pass
        self.page.screenshot(path=str(path))
        return path

    # -- widgets -------------------------------------------------------------------------------------------------

    def widget_with_button(self, label: str, nth: int = -1):
        """The widget box (an explorer) holding a button with this label; the last one on the page by default."""
        boxes = self.page.locator(".jp-OutputArea-output .widget-vbox").filter(
            has=self.page.get_by_role("button", name=label, exact=True))
        boxes = boxes.filter(has_not=self.page.locator(".widget-vbox .widget-vbox"))
        box = boxes.nth(nth) if nth >= 0 else boxes.last
        box.wait_for(timeout=30000)
        return box

    def press_and_wait(self, box, button: str, view: Callable[[], str], before: str, timeout: float = 60) -> str:
        """Click the button and wait until `view()` differs from `before` and the kernel is idle again."""
        box.get_by_role("button", name=button, exact=True).click()
        return self.wait_change(view, before, timeout)

    def wait_change(self, view: Callable[[], str], before: str, timeout: float = 60) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            now = view()
            if now != before:
                self.page.wait_for_timeout(300)
                self.wait_kernel_idle(timeout)
                return view()
            self.page.wait_for_timeout(200)
        return view()


def html_text(locator) -> str:
    return " ".join(locator.inner_text().split())


def copy_finished_runs(source: Path, dest: Path, notebook: str, preset: str = "tiny", seed: int = 0) -> bool:
    """Copy `source/<notebook>/<preset>-seed<seed>` to `dest` when it holds a finished run (metrics.json);
    the source is never written to."""
    src = source / notebook / f"{preset}-seed{seed}"
    if not (src / "metrics.json").is_file():
        return False
    target = dest / notebook / f"{preset}-seed{seed}"
    if target.exists():
        return True
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("*.ipynb"))
    return True
