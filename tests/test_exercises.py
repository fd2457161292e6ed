"""Every exercise fails its check as committed, and passes it with the reference solution.

Each notebook from 01 on has an exercise: a code cell tagged ``exercise`` (the
student's code, with TODOs) and a code cell tagged ``check`` that runs it
against real faults and assigns the verdict to ``result`` (a
:class:`wslab.checks.report.Report`). The reference solution,
``notebooks/solutions/NN-topic.py``, replaces the exercise cell as a whole.

For each notebook this runs, in a fresh namespace: the exercise cell, then the
check cell, and expects a FAIL; then the solution, then the check cell, and
expects a PASS. The check runs for real, so this is as slow as the check.
"""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from wslab.runtime.timing import scaled

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb") if not p.name.startswith("00-"))


def _tagged(nb: Any, tag: str) -> str:
    cells = [c for c in nb.cells if c.cell_type == "code" and tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one code cell tagged {tag!r}, found {len(cells)}"
    return cells[0].source


def _solution(path: Path, nb: Any) -> Path:
    """The solution file the notebook points at with ``%load solutions/...``."""
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    found = re.findall(r"%load (solutions/[\w.-]+\.py)", text)
    assert found, f"{path.name} does not say where its solution is (%load solutions/...)"
    return path.parent / found[0]


async def _run(source: str, namespace: dict[str, Any]) -> None:
    """Run a notebook cell's code (top-level await allowed) in ``namespace``."""
    source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%"))
    code = compile(source, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # noqa: S307 - our own notebook's cells
    if asyncio.iscoroutine(result):
        await result


async def _verdict(student_code: str, check: str) -> Any:
    namespace: dict[str, Any] = {"__name__": "__exercise__"}
    await _run("import wslab\n" + student_code, namespace)
    await _run(check, namespace)
    return namespace["result"]


@pytest.mark.slow
@pytest.mark.deadline(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
async def test_the_exercise_fails_its_check_and_the_solution_passes(path: Path):
    nb = nbformat.read(path, as_version=4)
    exercise, check = _tagged(nb, "exercise"), _tagged(nb, "check")
    solution = _solution(path, nb).read_text()

    as_committed = await asyncio.wait_for(_verdict(exercise, check), scaled(120))
    assert not as_committed.passed, f"the unmodified exercise passes its check:\n{as_committed}"
    assert as_committed.failed, "a failing check must name the cases that fail"

    solved = await asyncio.wait_for(_verdict(solution, check), scaled(120))
    assert solved.passed, f"the reference solution fails its check:\n{solved}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_exercise_cell_defines_what_the_check_uses_and_imports_what_it_needs(path: Path):
    """No hidden NameError: the exercise cell runs on its own, in a fresh namespace."""
    nb = nbformat.read(path, as_version=4)
    exercise = _tagged(nb, "exercise")
    tree = ast.parse(exercise)
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    # Or names the cell assigns: notebook 03's student writes JavaScript, in a string (DECIDE = """...""").
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    check = _tagged(nb, "check")
    used = {n.id for n in ast.walk(ast.parse(check)) if isinstance(n, ast.Name)}
    assert used & defined, f"the check cell uses none of the exercise's functions {sorted(defined)}"
