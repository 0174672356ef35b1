"""A new inference worker loads the production model as soon as its pool process is up, before
any task asks for it: the first prediction after a start or a restart does not wait for it."""

from __future__ import annotations

import re

import pytest

from tests.faults.conftest import png, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_a_new_worker_loads_the_production_model_before_its_first_task(stack):
    worker = stack.start_worker()
    wait_for(lambda: "loaded ahead of the first task" in worker.log_text(), timeout=120,
             what=f"the production model loaded by {worker.name}'s pool process")
    log = worker.log_text()
    loaded = log.index("loaded ahead of the first task")
    first_task = re.search(r"run_prediction\[[^\]]+\] received", log)
    assert first_task is None or first_task.start() > loaded, log[-3000:]
    assert "could not load the production model" not in log
    assert re.search(r"loaded model version \S+ \(\S+\) on cpu: (frozen graph|eager)", log)
    # ...and the workers still analyse what is uploaded, each pool process on one thread: the
    # thread count torch keeps per calling thread is pinned in the task's thread too, not only in
    # the one that loaded the model (unpinned, each pool process ran a thread per core).
    ids = [stack.upload(png(90 + i), filename=f"warm{i}.png", patient_id=f"WARM-{i}")
           ["prediction_id"] for i in range(6)]
    rows = stack.wait_finished(ids, timeout=120)
    assert {row["status"] for row in rows.values()} == {"done"}, rows
    children = [pid for w in stack.workers if w.alive() for pid in w.children()]
    wait_for(lambda: all(_threads(pid) == 1 for pid in children), timeout=30,
             what=f"one thread in each pool process: {[_threads(pid) for pid in children]}")


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("Threads:")).split()[1])
