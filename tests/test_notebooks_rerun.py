"""Re-running cells, as a student does, and Run All, never fail and never leak.

nbval checks that each notebook runs top to bottom and gives its stored
outputs. Students do two more things, and both are checked here in a real
kernel, for every notebook:

- they press Shift-Enter twice on a cell, then carry on to the end. Here every
  code cell runs twice in a row, then the next cell, and so on to the end;
- they press Run All: JupyterLab queues every cell at once, and stops at the
  first error. Here every cell is queued at once, with ``stop_on_error``, and
  every one must finish with status "ok". A cell that raises on purpose would
  stop a student's Run All too, so no cell may raise.

After each run the lab is closed, and the kernel's open sockets and pending
asyncio tasks are compared with what it had before the first cell ran.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.util import run_sync

from wslab.runtime.timing import scaled

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]-*.ipynb"))
RUN_ALL_DEADLINE = 300.0  # seconds for a whole notebook queued at once (scaled)

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
_tasks = sorted(t.get_coro().__qualname__ for t in asyncio.all_tasks() if t is not asyncio.current_task())
print(json.dumps({"sockets": _wslab_sockets(), "tasks": _tasks}))
"""


def _skipped(cell: Any) -> bool:
    return "NBVAL_SKIP" in cell.source or "nbval-skip" in cell.metadata.get("tags", [])


def _code_cells(nb: Any) -> list[tuple[int, Any]]:
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and not _skipped(c)]


def _probe(client: NotebookClient, nb: Any) -> dict[str, Any]:
    cell = nbformat.v4.new_code_cell(PROBE)
    nb.cells.append(cell)
    client.execute_cell(cell, len(nb.cells) - 1)
    nb.cells.pop()
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    return json.loads(re.findall(r"^\{.*\}$", text, re.MULTILINE)[-1])


def _client(path: Path) -> tuple[NotebookClient, Any]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=int(scaled(300)), kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    return client, nb


def _skip_if_marked(request: pytest.FixtureRequest) -> None:
    skip = list(request.node.iter_markers("skip"))
    if skip:
        pytest.skip(skip[0].kwargs.get("reason", ""))


def _assert_nothing_left(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["sockets"] <= before["sockets"], f"sockets left open: {before} -> {after}"
    assert after["tasks"] == before["tasks"], f"tasks left running: {before} -> {after}"


@pytest.mark.slow
@pytest.mark.rerun
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_cell_twice_in_a_row_then_on_to_the_end(path: Path, request: pytest.FixtureRequest):
    _skip_if_marked(request)
    client, nb = _client(path)
    with client.setup_kernel():
        before = _probe(client, nb)
        for index, cell in _code_cells(nb):
            for run in (1, 2):
                client.execute_cell(cell, index)
                errors = [o for o in cell.outputs if o.get("output_type") == "error"]
                if errors:
                    pytest.fail(f"cell {index}, run {run} in a row: {errors[0]['ename']}: {errors[0]['evalue']}")
                stderr = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
                assert "address already in use" not in stderr.lower(), f"cell {index}, run {run}: {stderr}"
        after = _probe(client, nb)
    _assert_nothing_left(before, after)


@pytest.mark.slow
@pytest.mark.rerun
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_run_all_queues_every_cell_at_once_and_each_finishes_ok(path: Path, request: pytest.FixtureRequest):
    _skip_if_marked(request)
    client, nb = _client(path)
    with client.setup_kernel():
        before = _probe(client, nb)
        kc = client.kc
        assert kc is not None
        # What JupyterLab's Run All sends: every execute_request at once; an error aborts the rest.
        pending = {kc.execute(cell.source, stop_on_error=True): index for index, cell in _code_cells(nb)}
        statuses: dict[int, str] = {}
        errors: dict[int, str] = {}
        end = time.monotonic() + scaled(RUN_ALL_DEADLINE)
        while pending:
            remaining = end - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"Run All did not finish within {scaled(RUN_ALL_DEADLINE):g} s; "
                            f"cells still queued: {sorted(pending.values())}")
            reply = run_sync(kc.get_shell_msg)(timeout=remaining)  # nbclient's kernel client is async
            index = pending.pop(reply["parent_header"].get("msg_id"), None)
            if index is None:
                continue
            statuses[index] = reply["content"]["status"]
            if reply["content"]["status"] == "error":
                errors[index] = f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}"
        not_ok = {i: s for i, s in statuses.items() if s != "ok"}
        assert not not_ok, f"Run All: cells not ok: {not_ok}; errors: {errors}"
        after = _probe(client, nb)
    _assert_nothing_left(before, after)
