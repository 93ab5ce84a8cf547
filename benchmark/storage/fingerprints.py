"""Fingerprints of the code that computes a value: cache keys and run parts carry them.

:func:`code_fingerprint` hashes the syntax trees of the named modules (comments and
docstrings do not count, so prose edits keep every key). :func:`closure_fingerprint` adds
every module of ``benchmark``, ``methods`` and ``metrics`` that the named modules import,
directly or through others, read from the static import graph (grimp, the library that
import-linter uses; imports under ``if TYPE_CHECKING`` are annotations, not dependencies,
and are left out). So a value is recomputed when, and only when, code it depends on changes:
editing the capture engine invalidates capture statistics and everything built on them; adding
a method file changes nothing that existed before (plug-ins are reached through the
registries, not imported).
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

PACKAGES = ("benchmark", "methods", "metrics")


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            first = body[0] if body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=None)
def _module_digest(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ValueError(f"cannot fingerprint {module!r}: no Python source found")
    tree = _strip_docstrings(ast.parse(Path(spec.origin).read_text()))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def code_fingerprint(*modules: str) -> str:
    """Hash of the code of ``modules`` (their syntax trees without comments or docstrings),
    so a change in the code that computes an entry gives it a new key, while edits of
    unrelated modules (or of prose) keep every entry valid."""
    digest = hashlib.sha256()
    for module in sorted(set(modules)):
        digest.update(f"{module}={_module_digest(module)};".encode())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def _import_graph():
    import grimp

    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)


def dependencies(*modules: str) -> frozenset[str]:
    """``modules`` and every project module they import (transitively). Modules outside
    the project's packages (e.g. a test's probe module) are kept as given."""
    graph = _import_graph()
    out = set(modules)
    for module in modules:
        if module in graph.modules:
            out |= graph.find_upstream_modules(module)
    return frozenset(out)


def closure_fingerprint(*modules: str) -> str:
    """:func:`code_fingerprint` of ``modules`` and all the project code they import."""
    return code_fingerprint(*dependencies(*modules))
