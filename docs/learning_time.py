#!/usr/bin/env python3
"""How long each notebook takes a newcomer: measured quantities, a stated reading model, one table.

    python3 docs/learning_time.py            # the table, in minutes
    python3 docs/learning_time.py --check    # exit 1 if a notebook or the README states another time

What is *measured*, from the committed (executed) notebooks:

- the words of prose a student reads (markdown cells);
- the lines of code a student reads (code cells, blank lines and NBVAL markers left out);
- the lines of text output and the number of figures;
- the waiting time: the sum of every code cell's run time, from the timing nbclient
  stores in each cell when ``python3 tasks.py execute`` runs the notebook.

What is *assumed*, and where the numbers come from:

- prose at 120 words per minute: half of the 238 wpm that adults read English
  non-fiction at (Brysbaert, "How many words do we read per minute?", Journal of
  Memory and Language 109, 2019), because this is technical prose, often read in
  a second language, with code to look back at;
- code at 8 lines per minute, output at 40 lines per minute, one minute per figure;
- each exercise: 15 minutes to write, run the check, read the hints and fix. This
  is the least certain number; docs/instructor-notes.md asks teachers to time it.

The result is rounded up to 5 minutes. A notebook states it as
"**Time to learn:** N min"; the README's table repeats it. ``--check`` keeps
them honest: it fails when any stated time differs from this estimate.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))

PROSE_WPM = 120
CODE_LINES_PER_MIN = 8
OUTPUT_LINES_PER_MIN = 40
MINUTES_PER_FIGURE = 1.0
MINUTES_PER_EXERCISE = 15.0

STATED = re.compile(r"\*\*Time to learn:?\*\*:?\s*(\d+)\s*min")


def _seconds(cell: dict) -> float:
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not start or not end:
        return 0.0
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return max(0.0, (parse(end) - parse(start)).total_seconds())


def measure(path: Path) -> dict[str, float]:
    """The measured quantities of one executed notebook."""
    cells = json.loads(path.read_text())["cells"]
    words = code = output = figures = waiting = 0.0
    exercises = 0
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            words += len(re.findall(r"[A-Za-z0-9_']+", source))
            continue
        if cell["cell_type"] != "code":
            continue
        if "exercise" in cell.get("metadata", {}).get("tags", []):
            exercises += 1
        code += sum(1 for line in source.splitlines() if line.strip() and not line.strip().startswith("# NBVAL"))
        waiting += _seconds(cell)
        for out in cell.get("outputs", []):
            if "image/png" in out.get("data", {}):
                figures += 1
                continue
            text = "".join(out.get("text", "")) or "".join(out.get("data", {}).get("text/plain", ""))
            output += len(text.splitlines())
    return {"words": words, "code_lines": code, "output_lines": output, "figures": figures,
            "waiting_s": waiting, "exercises": exercises}


def estimate(m: dict[str, float]) -> int:
    """Minutes to learn, rounded up to 5."""
    minutes = (m["words"] / PROSE_WPM + m["code_lines"] / CODE_LINES_PER_MIN
               + m["output_lines"] / OUTPUT_LINES_PER_MIN + m["figures"] * MINUTES_PER_FIGURE
               + m["waiting_s"] / 60 + m["exercises"] * MINUTES_PER_EXERCISE)
    return int(math.ceil(minutes / 5) * 5)


def stated(path: Path) -> int | None:
    cells = json.loads(path.read_text())["cells"]
    found = STATED.search("".join(cells[0]["source"])) if cells else None
    return int(found.group(1)) if found else None


def readme_times() -> dict[str, int]:
    text = (ROOT / "README.md").read_text()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| `(\d\d-[\w-]+)` \|.*\| (\d+) min \|$", text, re.M)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a stated time differs from the estimate")
    args = parser.parse_args()
    readme = readme_times()
    problems = []
    total = 0
    print(f"{'notebook':<36} {'words':>6} {'code':>5} {'output':>6} {'figs':>4} {'wait s':>6} {'ex':>2} {'min':>4}")
    for path in NOTEBOOKS:
        m = measure(path)
        minutes = estimate(m)
        total += minutes
        print(f"{path.stem:<36} {m['words']:>6.0f} {m['code_lines']:>5.0f} {m['output_lines']:>6.0f} "
              f"{m['figures']:>4.0f} {m['waiting_s']:>6.1f} {m['exercises']:>2.0f} {minutes:>4}")
        if stated(path) != minutes:
            problems.append(f"{path.name} states {stated(path)} min, the estimate is {minutes} min")
        if readme.get(path.stem) != minutes:
            problems.append(f"README states {readme.get(path.stem)} min for {path.stem}, the estimate is {minutes} min")
    print(f"{'all notebooks':<36} {'':>6} {'':>5} {'':>6} {'':>4} {'':>6} {'':>2} {total:>4}  ({total / 60:.1f} h)")
    if args.check and problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
