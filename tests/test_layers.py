"""The package's layering: data flows one way, and no import of our own hides in a function.

Each part of the package (a subpackage or a root module) has a rank; a module may import
only parts of a lower rank. A new module in a new place fails here until it is given one,
so the order below is the architecture, written once.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lipsync_fix"

ORDER = [
    "errors", "files", "records", "compute",  # used by everything
    "media", "faces", "features", "models", "sync",  # the main job's chain
    "lse",  # the lip-sync metric, on the same faces and features
    "batch", "report", "data", "training", "evaluation", "separation", "demo",  # built on it
    "cli", "__init__", "__main__",  # the surfaces
]
RANK = {name: k for k, name in enumerate(ORDER)}


def part_of(module: str) -> str:
    """``lipsync_fix.sync.estimate`` -> ``sync``; ``lipsync_fix`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def own_imports(tree: ast.AST) -> list[tuple[ast.stmt, str]]:
    """Every import of ``lipsync_fix`` modules (absolute, as the package writes them)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "lipsync_fix":
            if node.module == "lipsync_fix":
                found += [(node, f"lipsync_fix.{alias.name}") for alias in node.names]
            else:
                found.append((node, node.module))
        elif isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names
                      if alias.name.split(".")[0] == "lipsync_fix"]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_import_only_lower_layers(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = part_of(module_name(path))
    assert here in RANK, f"{path}: give '{here}' a rank in ORDER"
    for node, target in own_imports(tree):
        there = part_of(target)
        if there == here:
            continue
        assert there in RANK, f"{path}:{node.lineno} imports unknown part {target}"
        assert RANK[there] < RANK[here], \
            f"{path}:{node.lineno}: {here} imports {target}, a higher layer"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_of_our_own_inside_a_function(path: Path) -> None:
    """A function-level import of the package would be a cycle dodged, not removed
    (optional third-party packages may still be imported where they are needed)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = own_imports(fn)
            assert not inner, f"{path}:{inner[0][0].lineno}: import inside {fn.name}()"


def test_the_checker_sees_a_violation() -> None:
    """The rules above catch what they are for (an upward and a hidden import)."""
    tree = ast.parse("from lipsync_fix.cli import app\n"
                     "def f():\n    from lipsync_fix import sync\n")
    targets = [t for _, t in own_imports(tree)]
    assert targets == ["lipsync_fix.cli", "lipsync_fix.sync"]
    assert RANK[part_of(targets[0])] > RANK["media"]
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    assert [t for _, t in own_imports(fn)] == ["lipsync_fix.sync"]
