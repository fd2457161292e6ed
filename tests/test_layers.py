"""Imports inside wslab point one way: studies use servers and clients, servers use the runtime.

The order, lowest first: runtime, faults, servers, clients, studies, checks, cli.
A module may import from its own group or a lower one, never from a higher one.
The package's own ``__init__.py`` and ``__main__.py`` sit on top and may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wslab"
LAYERS = ["runtime", "faults", "servers", "clients", "studies", "checks", "cli"]
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def _group(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0]


def _imported_groups(path: Path) -> set[str]:
    """The wslab groups a module imports from (absolute or relative imports, including lazy ones)."""
    tree = ast.parse(path.read_text())
    own = _group(path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("wslab."):
                found.add(node.module.split(".")[1])
            elif node.level == 1:
                found.add(own)
            elif node.level == 2 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 2:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("wslab."):
                    found.add(alias.name.split(".")[1])
    return {group for group in found if group in LAYERS}


def test_every_module_belongs_to_a_layer():
    assert {_group(p) for p in MODULES} <= set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_point_down_the_layers(path: Path):
    mine = LAYERS.index(_group(path))
    upward = {group for group in _imported_groups(path) if LAYERS.index(group) > mine}
    assert not upward, f"{path.relative_to(PACKAGE)} ({LAYERS[mine]}) imports from higher layers: {sorted(upward)}"
