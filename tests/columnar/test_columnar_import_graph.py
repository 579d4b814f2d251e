"""The columnar table knows nothing of the layers above it: no module of
orochi_fdw/columnar/ imports orochi_fdw.timeseries (hypertables plug in
through orochi_fdw.columnar.extensions). Read from the source with ast, so
imports inside functions and under TYPE_CHECKING count too."""

from __future__ import annotations

import ast
import pathlib

import pytest

import orochi_fdw

PACKAGE = pathlib.Path(orochi_fdw.__file__).resolve().parent
#: packages columnar/ must not import: they build on it
ABOVE = ("orochi_fdw.timeseries",)


def imported_modules(path: pathlib.Path, package: str) -> set[str]:
    """Every module a file's import statements name (relative ones resolved
    against ``package``; ``from X import y`` counts as X and X.y)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            out.add(str(node.args[0].value))
    return out


def offending(directory: pathlib.Path, package: str) -> list[str]:
    found = []
    for path in sorted(directory.glob("*.py")):
        for module in sorted(imported_modules(path, package)):
            if any(module == above or module.startswith(above + ".") for above in ABOVE):
                found.append(f"{path.name}: {module}")
    return found


def test_columnar_imports_nothing_above_it():
    files = list((PACKAGE / "columnar").glob("*.py"))
    assert len(files) > 10  # the installed package's sources are there
    assert offending(PACKAGE / "columnar", "orochi_fdw.columnar") == []


@pytest.mark.parametrize("source", [
    "from orochi_fdw.timeseries.chunks import ChunkRouter\n",
    "def f():\n    from orochi_fdw.timeseries import hypertable\n",
    "import orochi_fdw.timeseries.timekeys as t\n",
    "from ..timeseries import chunks\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from orochi_fdw import timeseries\n",
    "import importlib\nm = importlib.import_module('orochi_fdw.timeseries')\n",
])
def test_the_check_sees_each_form_of_import(tmp_path, source):
    (tmp_path / "mod.py").write_text(source)
    assert offending(tmp_path, "orochi_fdw.columnar") != []


def test_hypertables_register_with_the_table():
    from orochi_fdw.columnar import extensions
    from orochi_fdw.timeseries import extension

    assert extension.HYPERTABLES in extensions.registered()
