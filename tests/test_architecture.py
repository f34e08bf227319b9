"""The package's shape: layers run one way, no import circles, no private names borrowed across modules.

The layers are written down once, as an import-linter contract in pyproject.toml; this runs it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qagen"
MAX_LINES = 400  # "about 400" (the team's design notes): a module past this does more than one job


def test_layers_contract_is_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles_between_modules():
    graph = grimp.build_graph("qagen")  # function-level and TYPE_CHECKING imports included
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle(tmp_path, monkeypatch):
    pkg = tmp_path / "circle_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from circle_pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from circle_pkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("circle_pkg")) == [["circle_pkg.a", "circle_pkg.b"]]


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qagen"):
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                      for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_a_private_name_from_another():
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _private_imports(path)]
    offenders += [hit for path in sorted((ROOT / "tests").glob("*.py")) for hit in _private_imports(path)]
    assert offenders == []


def test_modules_stay_small():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_tree_reads_like_the_pipeline():
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert stages >= {"core", "corpus", "llm", "prompting", "store", "generate", "curate", "output", "pipeline",
                      "flow", "cli", "testing"}
    flat = {p.name for p in PACKAGE.glob("*.py")}
    assert flat == {"__init__.py", "__main__.py", "config.py"}  # everything else lives in its stage (`python -m qagen`)


def test_public_api_is_lazy_and_importable():
    code = ("import sys, qagen; assert 'qagen.pipeline' not in sys.modules; "
            "from qagen import ingest, run, train, evaluate, write_report, export, load_settings, load_prompts; "
            "print(ingest.__module__, run.__module__, load_prompts.__module__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["qagen.pipeline.ingest", "qagen.flow.run", "qagen.prompting.prompts"]


def test_all_sql_lives_in_the_store():
    """Every statement on the state database is a named query in qagen/store (dedup's scratch DB is its own)."""
    allowed = {PACKAGE / "curate" / "quality.py"}  # DedupSession: a private temporary database, not the state
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "store" in path.parents or PACKAGE / "testing" in path.parents or path in allowed:
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(ROOT)}: {word}" for word in (".execute(", ".executemany(", "import sqlite3")
                      if word in text]
    assert offenders == []
