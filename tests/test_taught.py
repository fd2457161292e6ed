"""The code notebooks teach (CONTRIBUTING.md lists it) exists, has a public name and a docstring."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def taught_names() -> list[str]:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    section = text.split("## Taught code and instrument code", 1)[1].split("\nInstrument:", 1)[0]
    return re.findall(r"`(wslab(?:\.\w+)+)`", section)


def resolve(dotted: str) -> object:
    """The object named ``wslab.module.Class.attr``: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_the_list_is_there():
    assert len(taught_names()) >= 15


@pytest.mark.parametrize("dotted", taught_names())
def test_taught_code_is_public_and_documented(dotted: str):
    assert not any(part.startswith("_") for part in dotted.split(".")), f"{dotted}: taught code needs a public name"
    obj = resolve(dotted)
    assert obj.__doc__, f"{dotted} has no docstring: students read it"
