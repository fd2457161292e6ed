"""Show wslab's own code in a notebook, so the code a notebook teaches is the code that runs."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["show_source", "SourceCode"]


class SourceCode:
    """Source text that renders highlighted in Jupyter and plain elsewhere."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where

    def __str__(self) -> str:
        return f"# {self.where}\n{self.text}"

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        return f"`{self.where}`\n\n```python\n{self.text}```"


def show_source(obj: Any) -> SourceCode:
    """The source of a wslab function, class or method, as it is on disk now."""
    text = inspect.getsource(obj)
    module = inspect.getmodule(obj)
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", "?"))
    where = f"{module.__name__}.{name}" if module else name
    return SourceCode(inspect.cleandoc("\n" + text) + "\n" if text.startswith(" ") else text, where)
