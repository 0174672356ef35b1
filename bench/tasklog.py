"""Where a pool process's time goes between its predictions, from a worker's log.

    .venv/bin/python bench/tasklog.py LOGS/worker0.log [--json]

`bench/run.py --logs LOGS` keeps the workers' logs. Each log line carries the process id, and
Celery logs every finished task with its run time and result, so each pool process's timeline
can be rebuilt: the tasks that ran a prediction (alone or as a micro-batch: "done", "failed",
or "queued" when it crashed and was put back),
the ones whose prediction a batch had already taken ("skipped": micro-batching leaves one such
message for each companion it claimed), and the gaps between tasks (the message's way from
Redis through the worker's main process into the pool process).

Per pool process, over its longest busy stretch (no gap of more than --idle-gap-s, i.e. the
sustained and drain phases of a benchmark run), it prints the stretch's length, how many
messages were skipped, and their cost: their own run time plus the gap before each, in all
and as a share of the stretch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

# cxrweb.settings.LOGGING: "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
_SUCCEEDED = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<pid>\d+) INFO celery\.app\.trace: "
    r"Task \S+\[\S+\] succeeded in (?P<run>[\d.e-]+)s: '(?P<result>\w+)'"
)


def task_timelines(lines) -> dict[int, list[tuple[float, float, str]]]:
    """{pid: [(start_s, end_s, result), ...]} in time order, from Celery's "succeeded" lines."""
    timelines: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
    for line in lines:
        match = _SUCCEEDED.match(line)
        if match is None:
            continue
        end = dt.datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        timelines[int(match["pid"])].append((end - float(match["run"]), end, match["result"]))
    return {pid: sorted(tasks) for pid, tasks in timelines.items()}


def busiest_stretch(tasks: list[tuple[float, float, str]], idle_gap_s: float) -> list:
    """The longest run of tasks with no gap above idle_gap_s between one and the next."""
    best, start = (0, 0), 0
    for i in range(1, len(tasks) + 1):
        if i == len(tasks) or tasks[i][0] - tasks[i - 1][1] > idle_gap_s:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = i
    return tasks[best[0] : best[1]]


def skipped_cost(stretch: list[tuple[float, float, str]]) -> dict:
    """The stretch's length, and what its skipped messages cost (their run plus the gap before)."""
    span = stretch[-1][1] - stretch[0][0]
    skipped = [t for t in stretch if t[2] == "skipped"]
    run = sum(t[1] - t[0] for t in skipped)
    gaps = sum(b[0] - a[1] for a, b in zip(stretch, stretch[1:], strict=False) if b[2] == "skipped")
    worked = [t for t in stretch if t[2] != "skipped"]
    return {
        "span_s": round(span, 2),
        "tasks_that_ran_predictions": len(worked),
        "their_run_share": round(sum(t[1] - t[0] for t in worked) / span, 3) if span else None,
        "skipped_messages": len(skipped),
        "skipped_ms_each": round((run + gaps) * 1000 / len(skipped), 1) if skipped else None,
        "skipped_run_ms_each": round(run * 1000 / len(skipped), 1) if skipped else None,
        "skipped_share": round((run + gaps) / span, 3) if span else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("log", type=Path, help="a worker's log (bench/run.py --logs)")
    parser.add_argument("--idle-gap-s", type=float, default=0.5)
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    args = parser.parse_args(argv)
    with args.log.open(errors="replace") as fh:
        timelines = task_timelines(fh)
    if not timelines:
        print(
            f"{args.log}: no finished tasks with a process id (LOG_LEVEL must be INFO)",
            file=sys.stderr,
        )
        return 1
    report = {
        str(pid): skipped_cost(busiest_stretch(tasks, args.idle_gap_s))
        for pid, tasks in timelines.items()
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for pid, r in report.items():
        print(
            f"pool process {pid}: busiest stretch {r['span_s']} s; "
            f"{r['tasks_that_ran_predictions']} tasks ran predictions "
            f"({r['their_run_share']:.0%} of it); {r['skipped_messages']} skipped messages, "
            f"{r['skipped_ms_each']} ms each ({r['skipped_run_ms_each']} ms running), "
            f"{r['skipped_share']:.0%} of it"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
