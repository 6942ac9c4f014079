"""The house rules of seqnb's layout: one folder per paper with the same module names, a registry without import
side effects, `method.py` free of the experiment, and no paper imported from outside `seqnb/papers/`."""

import ast
import subprocess
import sys
from pathlib import Path

from seqnb.papers import PAPERS, notebook_specs

SEQNB = Path(__file__).resolve().parents[1] / "seqnb"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(SEQNB.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names


def test_every_notebook_has_a_folder_with_the_same_module_names():
    for notebook, folder in PAPERS.items():
        files = {p.name for p in (SEQNB / "papers" / folder).glob("*.py")}
        assert {"__init__.py", "config.py", "experiment.py", "views.py"} <= files, notebook
        if notebook != "00_quickstart":  # the quickstart's step is seqnb.train.sft_step
            assert "method.py" in files, notebook
    assert {n: s.name for n, s in notebook_specs().items()} == {n: n for n in PAPERS}


def test_importing_the_registry_imports_no_paper():
    code = "import sys, seqnb.papers; print(sorted(m for m in sys.modules if m.startswith('seqnb.papers.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_method_modules_import_neither_experiment_nor_views():
    for folder in PAPERS.values():
        for path in (SEQNB / "papers" / folder).glob("*.py"):
            if path.stem in ("experiment", "views"):
                continue
            bad = {m for m in imported_modules(path)
                   if m.startswith(f"seqnb.papers.{folder}.") and m.split(".")[3] in ("experiment", "views")}
            assert not bad, f"{path.relative_to(SEQNB)} imports {bad}"


def test_nothing_outside_papers_imports_a_paper_and_no_paper_imports_another():
    for path in SEQNB.rglob("*.py"):
        rel = path.relative_to(SEQNB)
        own = rel.parts[1] if rel.parts[0] == "papers" and len(rel.parts) > 2 else None
        papers = {m.split(".")[2] for m in imported_modules(path) if m.startswith("seqnb.papers.")} - {own}
        papers &= set(PAPERS.values())
        assert not papers, f"{rel} imports the paper(s) {papers}: go through seqnb.papers.paper_module"


def test_every_link_to_a_notebook_section_names_a_heading_there():
    import json
    import re

    links = []
    for path in SEQNB.rglob("*.py"):
        for nb, sections in re.findall(r"Taught in notebooks/(\w+)\.ipynb, (.*?)\.(?:\"\"\"|\n)", path.read_text()):
            links += [(path, nb, s) for s in re.findall(r'§ "(.*?)"', sections)]
    assert links, "the paper modules point to the notebook sections that teach them"
    for path, nb, section in links:
        cells = json.loads((SEQNB.parent / "notebooks" / f"{nb}.ipynb").read_text())["cells"]
        headings = {line.lstrip("#").strip() for c in cells if c["cell_type"] == "markdown"
                    for line in "".join(c["source"]).splitlines() if line.startswith("#")}
        assert section in headings, f"{path.relative_to(SEQNB)}: no heading {section!r} in {nb}"
