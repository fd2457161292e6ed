"""The stated times: every notebook's "Time to learn" and the README's table agree with docs/learning_time.py.

The estimate is computed from measured quantities of the executed notebooks (words, code
lines, output lines, figures, the cells' recorded run times, exercises); the model's rates are
stated in that script's docstring.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "learning_time.py"


def _module():
    spec = importlib.util.spec_from_file_location("learning_time", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_stated_time_is_within_one_step_of_the_estimate():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_estimate_adds_each_measured_quantity_at_its_stated_rate():
    lt = _module()
    # 1,200 words (10 min), 80 code lines (10 min), 400 output lines (10 min), 2 figures (2 min),
    # 90 s of waiting (1.5 min) and one exercise (15 min): 48.5 min, rounded up to 50.
    m = {"words": 1200, "code_lines": 80, "output_lines": 400, "figures": 2, "waiting_s": 90, "exercises": 1}
    assert lt.estimate(m) == 50
    assert lt.estimate({**m, "exercises": 0}) == 35  # 33.5 min


def test_the_measurement_reads_cells_as_nbclient_stores_them(tmp_path):
    lt = _module()
    timing = {"iopub.execute_input": "2026-11-25T10:00:00.000000Z",
              "shell.execute_reply": "2026-11-25T10:00:12.500000Z"}
    nb = {"cells": [
        {"cell_type": "markdown", "source": ["# Title\n", "**Time to learn:** 25 minutes.\n"], "metadata": {}},
        {"cell_type": "code", "source": ["# NBVAL_IGNORE_OUTPUT\n", "x = 1\n", "\n", "print(x)\n"],
         "metadata": {"execution": timing, "tags": ["exercise"]},
         "outputs": [{"output_type": "stream", "text": "1\n2\n"},
                     {"output_type": "display_data", "data": {"image/png": "…"}}]},
    ]}
    path = tmp_path / "99-x.ipynb"
    path.write_text(__import__("json").dumps(nb))
    m = lt.measure(path)  # words: Title Time to learn 25 minutes
    assert (m["words"], m["code_lines"], m["output_lines"], m["figures"], m["exercises"]) == (6, 2, 2, 1, 1)
    assert abs(m["waiting_s"] - 12.5) < 1e-6
    assert lt.stated(path) == 25


def test_the_instructor_notes_table_is_rewritten_from_the_measurement(tmp_path, monkeypatch):
    lt = _module()
    notes = tmp_path / "notes.md"
    notes.write_text("before\n<!-- learning-times:start -->\nstale\n<!-- learning-times:end -->\n"
                     "### 01 Reproduce the broken pipe (5 min, waits 1 s; `check_deaths`)\n")
    monkeypatch.setattr(lt, "NOTES", notes)
    m = {"words": 1200, "code_lines": 80, "output_lines": 400, "figures": 2, "waiting_s": 90, "exercises": 1}
    lt.write_notes([("01-reproduce-the-broken-pipe", m, 50)])
    text = notes.read_text()
    assert "stale" not in text and "| 01-reproduce-the-broken-pipe | 1200 | 80 | 400 | 2 | 90.0 | 1 | 50 min |" in text
    assert "### 01 Reproduce the broken pipe (50 min, waits 90 s; `check_deaths`)" in text
