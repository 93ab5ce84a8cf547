"""The layout holds: stages import one way, no import cycle, small files, lint clean.

The layering itself is the import-linter contract in pyproject.toml (run here as CI runs
it); the cycle check covers what a layers contract does not see (modules of one stage
importing each other in a circle).
"""
from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("benchmark", "methods", "metrics")
STAGES = ("core", "storage", "sources", "engine", "planting", "tracks", "evaluation", "reporting", "run")
MAX_LINES = 400


def _tool(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    path = str(found) if found.exists() else shutil.which(name)
    assert path, f"{name} is not installed (pip install -e '.[dev]')"
    return path


def test_import_linter_contracts_are_kept():
    done = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "broken" in done.stdout and "0 broken" in done.stdout


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
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


def test_the_import_graph_has_no_cycle():
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    assert len(graph.modules) > 80
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.z", imported="a.x")
    assert _cycles(graph) == [["a.x", "a.y"]]


def test_every_stage_package_says_what_it_holds_and_may_import():
    for stage in STAGES:
        module = importlib.import_module(f"benchmark.{stage}")
        doc = module.__doc__ or ""
        assert doc.strip(), f"benchmark.{stage} has no docstring"
        assert "may import" in doc.lower(), f"benchmark.{stage}'s docstring does not say what it may import"


def test_every_module_has_a_docstring_and_no_file_is_over_400_lines():
    long, undocumented = [], []
    for package in PACKAGES:
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, prefix=f"{package}."):
            module = importlib.import_module(info.name)
            if not (module.__doc__ or "").strip():
                undocumented.append(info.name)
    for path in [*ROOT.glob("benchmark/**/*.py"), *ROOT.glob("methods/*.py"), *ROOT.glob("metrics/*.py"),
                 *ROOT.glob("tests/**/*.py")]:
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            long.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert not undocumented, f"modules without a docstring: {undocumented}"
    assert not long, f"files over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("package", ["benchmark", "methods", "metrics", "tests"])
def test_ruff_is_clean(package):
    done = subprocess.run([_tool("ruff"), "check", package], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]


def test_mypy_is_clean_on_core_storage_engine_and_the_plugins():
    """The files checked are listed in pyproject.toml ([tool.mypy] files)."""
    done = subprocess.run([_tool("mypy"), "--no-incremental"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Success: no issues found" in done.stdout
