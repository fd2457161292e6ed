#!/usr/bin/env python3
"""How long each notebook takes a newcomer: measured quantities, a stated reading model, one table.

    python3 docs/learning_time.py            # the table, in minutes
    python3 docs/learning_time.py --check    # exit 1 if a notebook or the README states another time
    python3 docs/learning_time.py --write    # put the estimates into the notebooks' headers and the README

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
"**Time to learn:** N minutes", and its waiting time as "Waiting for cells: W s in
the committed run"; the README's table repeats N. ``python3 tasks.py execute`` runs
``--write`` after executing, so both follow each new run. ``--check`` keeps
them honest: it fails when any stated time is more than one rounding step
(5 minutes) from this estimate. One step of slack, because the waiting time
changes a little each time a notebook is executed again; ``--write`` (after
``python3 tasks.py execute``) sets every stated time to the estimate.
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

STATED = re.compile(r"(\*\*Time to learn:?\*\*:?\s*)(\d+)(\s*min)")
README_ROW = re.compile(r"^(\| `(\d\d-[\w-]+)` \|.*\| )(\d+)( min \|)$", re.M)
WAITING = re.compile(r"(Waiting for cells: )(\d+)( s in the committed run)")
NOTES = ROOT / "docs" / "instructor-notes.md"
NOTES_TABLE = re.compile(r"(<!-- learning-times:start -->\n).*?(<!-- learning-times:end -->)", re.S)
NOTES_HEADING = re.compile(r"^(### (\d\d) [^(\n]*\()(\d+) min, waits (\d+) s", re.M)
SLACK_MIN = 5
SLACK_S = 1  # the waiting time is stated in whole seconds


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
    return int(found.group(2)) if found else None


def stated_waiting(path: Path) -> int | None:
    cells = json.loads(path.read_text())["cells"]
    found = WAITING.search("".join(cells[0]["source"])) if cells else None
    return int(found.group(2)) if found else None


def readme_times() -> dict[str, int]:
    text = (ROOT / "README.md").read_text()
    return {m.group(2): int(m.group(3)) for m in README_ROW.finditer(text)}


def notes_table(rows: list[tuple[str, dict[str, float], int]]) -> str:
    """The instructor notes' table: one row per notebook, then the totals."""
    lines = ["| notebook | words | code lines | output lines | figures | waiting (s) | exercise | learning time |",
             "|---|---|---|---|---|---|---|---|"]
    for stem, m, minutes in rows:
        lines.append(f"| {stem} | {m['words']:.0f} | {m['code_lines']:.0f} | {m['output_lines']:.0f} | "
                     f"{m['figures']:.0f} | {m['waiting_s']:.1f} | {m['exercises']:.0f} | {minutes} min |")
    total = sum(minutes for _, _, minutes in rows)
    waited = sum(m["waiting_s"] for _, m, _ in rows)
    lines.append(f"| **all {len(rows)}** | | | | | **{waited:.0f}** | | **{total} min ({total / 60:.1f} h)** |")
    return "\n".join(lines) + "\n"


def write_notes(rows: list[tuple[str, dict[str, float], int]]) -> None:
    """Restate the table and each notebook's heading ("### 01 ... (85 min, waits 28 s") in the notes."""
    by_number = {stem[:2]: (m, minutes) for stem, m, minutes in rows}

    def heading(match: re.Match[str]) -> str:
        m, minutes = by_number.get(match.group(2), (None, None))
        if m is None:
            return match.group(0)
        return f"{match.group(1)}{minutes} min, waits {round(m['waiting_s'])} s"

    text = NOTES_TABLE.sub(lambda match: match.group(1) + notes_table(rows) + match.group(2), NOTES.read_text())
    NOTES.write_text(NOTES_HEADING.sub(heading, text))


def write(estimates: dict[str, int], waiting: dict[str, int]) -> None:
    """Set each notebook's stated times, and the README's, to the measurement (sources only, not outputs)."""
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        first = "".join(nb["cells"][0]["source"])
        minutes, seconds = estimates[path.stem], waiting[path.stem]
        new = STATED.sub(lambda m, minutes=minutes: f"{m.group(1)}{minutes}{m.group(3)}", first, count=1)
        new = WAITING.sub(lambda m, seconds=seconds: f"{m.group(1)}{seconds}{m.group(3)}", new, count=1)
        if new != first:
            nb["cells"][0]["source"] = new.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    readme = ROOT / "README.md"
    def row(m: re.Match[str]) -> str:
        return f"{m.group(1)}{estimates.get(m.group(2), m.group(3))}{m.group(4)}"

    readme.write_text(README_ROW.sub(row, readme.read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a stated time differs from the estimate")
    parser.add_argument("--write", action="store_true", help="set the stated times to the estimates")
    args = parser.parse_args()
    readme = readme_times()
    problems = []
    estimates, waiting, m_waiting = {}, {}, {}
    rows = []
    total = 0
    print(f"{'notebook':<36} {'words':>6} {'code':>5} {'output':>6} {'figs':>4} {'wait s':>6} {'ex':>2} {'min':>4}")
    for path in NOTEBOOKS:
        m = measure(path)
        minutes = estimate(m)
        total += minutes
        estimates[path.stem] = minutes
        waiting[path.stem] = round(m["waiting_s"])
        m_waiting[path.stem] = m["waiting_s"]
        rows.append((path.stem, m, minutes))
        print(f"{path.stem:<36} {m['words']:>6.0f} {m['code_lines']:>5.0f} {m['output_lines']:>6.0f} "
              f"{m['figures']:>4.0f} {m['waiting_s']:>6.1f} {m['exercises']:>2.0f} {minutes:>4}")
        said, listed = stated(path), readme.get(path.stem)
        if said is None or abs(said - minutes) > SLACK_MIN:
            problems.append(f"{path.name} states {said} min, the estimate is {minutes} min")
        said_s = stated_waiting(path)
        if said_s is None or abs(said_s - m["waiting_s"]) > SLACK_S:
            problems.append(f"{path.name} states {said_s} s of waiting, its cells' recorded run times add up to "
                            f"{m['waiting_s']:.1f} s: run python3 docs/learning_time.py --write")
        if listed is None or abs(listed - minutes) > SLACK_MIN:
            problems.append(f"README states {listed} min for {path.stem}, the estimate is {minutes} min")
    print(f"{'all notebooks':<36} {'':>6} {'':>5} {'':>6} {'':>4} {'':>6} {'':>2} {total:>4}  ({total / 60:.1f} h)")
    if args.write:
        write(estimates, waiting)
        write_notes(rows)
        print("wrote the estimates into the notebooks' headers and the README's table")
        return 0
    notes = NOTES.read_text()
    found = NOTES_TABLE.search(notes)
    # The table's counts move with every edit of a notebook's prose; its minutes must stay in step.
    listed_in_notes = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| (\d\d-[\w-]+) \|.*\| (\d+) min \|$",
                                                                        found.group(0) if found else "", re.M)}
    for stem, minutes in estimates.items():
        if stem not in listed_in_notes or abs(listed_in_notes[stem] - minutes) > SLACK_MIN:
            problems.append(f"docs/instructor-notes.md's table states {listed_in_notes.get(stem)} min for {stem}, "
                            f"the estimate is {minutes} min: run --write")
    for match in NOTES_HEADING.finditer(notes):
        stem = next((stem for stem, _, _ in rows if stem.startswith(match.group(2))), None)
        if stem and (abs(int(match.group(3)) - estimates[stem]) > SLACK_MIN
                     or abs(int(match.group(4)) - m_waiting[stem]) > SLACK_S):
            problems.append(f"docs/instructor-notes.md states {match.group(3)} min, {match.group(4)} s for "
                            f"{stem}: run --write")
    if args.check and problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
