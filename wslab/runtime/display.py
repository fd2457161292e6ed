"""Show things in a notebook: wslab's own code (so the code a notebook teaches is the code
that runs), and rows of results as a table."""

from __future__ import annotations

import html
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["show_source", "SourceCode", "table", "Table"]


class SourceCode:
    """Source text that renders highlighted in Jupyter and plain elsewhere."""

    def __init__(self, text: str, where: str, language: str = "python") -> None:
        self.text = text
        self.where = where
        self.language = language

    def __str__(self) -> str:
        return f"# {self.where}\n{self.text}"

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        return f"`{self.where}`\n\n```{self.language}\n{self.text}```"


def show_source(obj: Any) -> SourceCode:
    """The source of a wslab function, class or method, as it is on disk now."""
    text = inspect.getsource(obj)
    module = inspect.getmodule(obj)
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", "?"))
    where = f"{module.__name__}.{name}" if module else name
    return SourceCode(inspect.cleandoc("\n" + text) + "\n" if text.startswith(" ") else text, where)


class Table:
    """Rows of results: aligned text in a terminal and for nbval, HTML in JupyterLab."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.header = list(rows[0]) if rows else []
        self.rows = [[str(row.get(column, "")) for column in self.header] for row in rows]

    def __str__(self) -> str:
        rows = [self.header] + self.rows
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in r) + "</tr>"
            for r in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """A table of ``rows`` (dicts with the same keys, e.g. ``[o.row() for o in outcomes]``)."""
    return Table(rows)
