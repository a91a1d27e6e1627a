"""Layering: no module of ``frugal`` uses another module's private names, nor do the tests and
benchmarks.

A name starting with ``_`` (not a dunder) is private to the module that defines it. Another
``frugal`` module may neither import it (``from frugal.x import _name``) nor reach it
through an imported module (``import frugal.x as m; m._name``, ``from frugal import x;
x._name``). Private *modules* (``frugal._validation``, ``frugal._special``) are fine to
import: their public names are their interface; their private names are not.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "frugal"
#: Code outside the package that must use its public names only.
USERS = ("tests", "benchmarks")

#: ``(file relative to the repository, name)`` pairs tolerated for now, each with its reason.
#: Empty: frugal/gamma/differentiable.py, the last exception, no longer uses semsun's privates.
ALLOWED: set[tuple[str, str]] = set()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str, root: Path) -> bool:
    """Whether ``dotted`` (``frugal.x.y``) names a module or package under ``root``."""
    rel = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    base = root / rel
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str | None:
    """The absolute module of a ``from ... import`` (relative imports resolved)."""
    if node.level == 0:
        return node.module
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]`` for a chain of attribute accesses on a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return None


def violations(source: str, module: str, root: Path = PACKAGE, *, is_package: bool = False) -> list[str]:
    """Private names of other ``frugal`` modules used by ``source`` (the code of ``module``)."""
    tree = ast.parse(source)
    found = []
    modules = {}  # local name -> the frugal module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            src = _absolute(node, module, is_package)
            if not src or src.split(".")[0] != "frugal":
                continue
            for a in node.names:
                target = f"{src}.{a.name}"
                if _is_module(target, root):  # a submodule: its public names are its interface
                    modules[a.asname or a.name] = target
                elif _is_private(a.name) and src != module:
                    found.append(f"from {src} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "frugal":
                    if a.asname:
                        modules[a.asname] = a.name
                    else:  # ``import frugal.x.y`` binds ``frugal``
                        modules["frugal"] = "frugal"
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
            continue
        chain = _dotted(node)
        if not chain or chain[0] not in modules:
            continue
        # walk the chain as far as it names modules: ``frugal.gamma.simulate._x``
        target = modules[chain[0]]
        for part in chain[1:-1]:
            if not _is_module(f"{target}.{part}", root):
                target = None
                break
            target = f"{target}.{part}"
        if target is not None and target != module:
            found.append(".".join(chain))
    return sorted(set(found))


def test_no_module_uses_another_modules_private_names():
    report = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        names = violations(path.read_text(encoding="utf-8"), _module_name(path, PACKAGE),
                           is_package=path.name == "__init__.py")
        names = [n for n in names if (rel, n.split()[-1].split(".")[-1]) not in ALLOWED]
        report += [f"{rel}: {n}" for n in names]
    assert not report, "private names of other frugal modules in use:\n" + "\n".join(report)


def test_tests_and_benchmarks_use_public_names_only():
    """The tests and benchmarks exercise the library as a user would: through public names.
    A piece worth testing on its own is worth a public name in its module."""
    report = []
    for folder in USERS:
        for path in sorted((PACKAGE.parent / folder).rglob("*.py")):
            names = violations(path.read_text(encoding="utf-8"), f"{folder}.{path.stem}")
            report += [f"{path.relative_to(PACKAGE.parent).as_posix()}: {n}" for n in names]
    assert not report, "private names of frugal modules used outside the package:\n" + "\n".join(report)


def test_the_allow_list_has_no_stale_entries():
    for rel, name in ALLOWED:
        path = PACKAGE.parent / rel
        assert path.is_file(), f"allow-listed {rel} does not exist"
        module = _module_name(path, PACKAGE)
        used = {n.split()[-1].split(".")[-1] for n in violations(path.read_text(encoding="utf-8"), module)}
        assert name in used, f"{rel} no longer uses {name}: drop it from ALLOWED"


def test_the_checker_sees_each_kind_of_use():
    code = """
from frugal.gamma.semsun import _rows, unmix
from frugal.gamma import simulate as sim, physics
from frugal._validation import check_array
from frugal import _special
import frugal.gamma.resolution as R
import frugal.gamma.io
from .semsun import _Spec
from frugal.gamma.simulate import Detector, __all__

sim._CHUNK, physics.GRID_KEV, R._lines_and_continuum(), frugal.gamma.io._private
_special.erfc, _special._hidden, Detector._replace(name="x"), sim.__name__
"""
    found = violations(code, "frugal.gamma.example")
    assert found == sorted([
        "from frugal.gamma.semsun import _rows",
        "from frugal.gamma.semsun import _Spec",
        "sim._CHUNK",
        "R._lines_and_continuum",
        "frugal.gamma.io._private",
        "_special._hidden",
    ])
    # a module's own private names are its own business
    assert violations("from frugal.gamma.simulate import _CHUNK", "frugal.gamma.simulate") == []
