"""Re-running a notebook's cells, as a student does, never fails and never leaks.

nbval checks that each notebook runs top to bottom and gives its stored
outputs. A student also re-runs cells. This test runs every notebook twice in
the same kernel, then closes the lab, and compares the kernel's open sockets
and pending asyncio tasks with what it had before the first cell ran.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]-*.ipynb"))

PROBE = """
import asyncio, json, os
def _wslab_sockets():
    if not os.path.isdir("/proc/self/fd"):
        return -1
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n
import wslab as _w
if _w.current_lab() is not None:
    await _w.current_lab().close()
await asyncio.sleep(0.3)
print(json.dumps({"sockets": _wslab_sockets(),
                  "tasks": sorted(t.get_coro().__qualname__ for t in asyncio.all_tasks() if t is not asyncio.current_task())}))
"""


def _expects_error(cell) -> bool:
    return "NBVAL_RAISES_EXCEPTION" in cell.source or "raises-exception" in cell.metadata.get("tags", [])


def _skipped(cell) -> bool:
    return "NBVAL_SKIP" in cell.source or "nbval-skip" in cell.metadata.get("tags", [])


def _probe(client: NotebookClient, nb) -> dict:
    cell = nbformat.v4.new_code_cell(PROBE)
    nb.cells.append(cell)
    client.execute_cell(cell, len(nb.cells) - 1)
    nb.cells.pop()
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    return json.loads(re.findall(r"^\{.*\}$", text, re.MULTILINE)[-1])


@pytest.mark.slow
@pytest.mark.rerun
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_running_every_cell_twice_neither_fails_nor_leaks(path: Path, request):
    skip = [m for m in request.node.iter_markers("skip")]
    if skip:
        pytest.skip(skip[0].kwargs.get("reason", ""))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        before = _probe(client, nb)
        for run in (1, 2):
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or _skipped(cell):
                    continue
                client.allow_errors = _expects_error(cell)
                client.execute_cell(cell, index)
                errors = [o for o in cell.outputs if o.get("output_type") == "error"]
                if errors and not _expects_error(cell):
                    pytest.fail(f"run {run}, cell {index}: {errors[0]['ename']}: {errors[0]['evalue']}")
                stderr = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
                assert "address already in use" not in stderr.lower()
        after = _probe(client, nb)
    assert after["sockets"] <= before["sockets"], f"sockets left open: {before} -> {after}"
    assert after["tasks"] == before["tasks"], f"tasks left running: {before} -> {after}"
