"""The package's shape: one package per concept, layered without cycles or upward imports, short
modules and functions, and nothing heavy imported where the CLI's start-up reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "boosting_tickets"
# Lower layers never import higher ones; same-layer packages never import each other.
LAYERS = {
    "core": 0,
    "__init__": 0.5,  # the top-level module: __version__ and lazy re-exports (core.lazy only)
    "data": 1,
    "models": 1,
    "adversarial": 1,
    "training": 2,
    "tickets": 3,
    "report": 4,
    "instability": 4.5,  # writes report.instability's format, as bench writes report.results'
    "bench": 5,
    "zoo": 5,
    "api": 6,
    "cli": 7,
    "__main__": 8,
}
MODULE_LINES, FUNCTION_LINES = 500, 80
MODULES = sorted(ROOT.rglob("*.py"))


def _package(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imported_packages(path: Path) -> set[str]:
    """The boosting_tickets packages ``path`` imports (module level and inside functions)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        parts = parts[:-1] + ["__init__"]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = parts[: len(parts) - node.level]
            target = base + (node.module.split(".") if node.module else [])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "boosting_tickets"
        ):
            target = node.module.split(".")[1:]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("boosting_tickets.")]
            if not names:
                continue
            target = names[0].split(".")[1:]
        else:
            continue
        out.add(target[0] if target else "__init__")
    return out


def test_every_package_has_a_layer() -> None:
    assert {_package(p) for p in MODULES} <= set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_only(path: Path) -> None:
    own = _package(path)
    for target in _imported_packages(path) - {own}:
        assert LAYERS[target] < LAYERS[own], f"{own} (layer {LAYERS[own]}) imports {target}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_are_short(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= MODULE_LINES, f"{path.name} is over {MODULE_LINES} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= FUNCTION_LINES, f"{node.name} is {length} lines"


def test_the_training_loop_is_short() -> None:
    tree = ast.parse((ROOT / "training" / "loop.py").read_text())
    fit = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "fit")
    assert fit.end_lineno - fit.lineno + 1 <= 80
