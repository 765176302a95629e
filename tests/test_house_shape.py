"""The shape rules of docs/ARCHITECTURE.md, measured on the package's own source: a module over 500 lines, a
function over 60 or a class over 300 holds two concerns and is split before it grows further.

`OVER_TODAY` names what was over a bound when the rules were set down, with the size it had then: such a unit
may shrink, never grow, and its entry goes once it is within the bound (a test below says when an entry is stale).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bulkonboard"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 300

#: unit ("path" or "path:Qualified.name") -> its size in lines when the rules were set; may only shrink.
OVER_TODAY: dict[str, int] = {
}


def units() -> dict[str, tuple[str, int, int]]:
    """Every module, class and function of the package: name -> (kind, lines, bound)."""
    found: dict[str, tuple[str, int, int]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        source = path.read_text("utf-8")
        found[relative] = ("module", len(source.splitlines()), MAX_MODULE_LINES)
        _walk(ast.parse(source), relative, "", found)
    return found


def _walk(node: ast.AST, relative: str, prefix: str, found: dict[str, tuple[str, int, int]]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{child.name}"
            lines = (child.end_lineno or child.lineno) - child.lineno + 1
            if isinstance(child, ast.ClassDef):
                found[f"{relative}:{name}"] = ("class", lines, MAX_CLASS_LINES)
            else:
                found[f"{relative}:{name}"] = ("function", lines, MAX_FUNCTION_LINES)
            _walk(child, relative, f"{name}.", found)


def test_no_unit_outgrows_its_bound() -> None:
    over = []
    for name, (kind, lines, bound) in units().items():
        allowed = OVER_TODAY.get(name, bound)
        if lines > allowed:
            over.append(f"{kind} {name}: {lines} lines (bound {allowed})")
    assert not over, "split these, each holds two concerns:\n" + "\n".join(over)


def test_the_list_of_units_over_their_bound_is_current() -> None:
    measured = units()
    stale = [
        name
        for name, size in OVER_TODAY.items()
        if name not in measured or measured[name][1] <= measured[name][2] or measured[name][1] < size
    ]
    assert not stale, "within the bound or smaller now: lower or remove their entries in OVER_TODAY: " + ", ".join(stale)


@pytest.mark.parametrize("kind", ["module", "class", "function"])
def test_the_measure_sees_each_kind(kind: str) -> None:
    assert any(k == kind for k, _, _ in units().values())
