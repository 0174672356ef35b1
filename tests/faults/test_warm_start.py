"""A new inference worker loads the production model as soon as its pool process is up, before
any task asks for it: the first prediction after a start or a restart does not wait for it; nor
the first after a promotion."""

from __future__ import annotations

import re

import pytest

from tests.conftest import wait_for
from tests.faults.client import png
from tests.faults.config import CLASSES

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_a_new_worker_loads_the_production_model_before_its_first_task(stack):
    worker = stack.start_worker()
    wait_for(
        lambda: "loaded ahead of the first task" in worker.log_text(),
        timeout=120,
        what=f"the production model loaded by {worker.name}'s pool process",
    )
    log = worker.log_text()
    loaded = log.index("loaded ahead of the first task")
    first_task = re.search(r"run_prediction\[[^\]]+\] received", log)
    assert first_task is None or first_task.start() > loaded, log[-3000:]
    assert "could not load the production model" not in log
    assert re.search(r"loaded model version \S+ \(\S+\) on cpu: (frozen graph|eager)", log)
    # ...and the workers still analyse what is uploaded, each pool process on one torch thread:
    # the thread count torch keeps per calling thread is pinned in the task's thread too, not only
    # in the one that loaded the model (unpinned, each pool process ran a thread per core). Two
    # threads per pool process: the task's, and the one that loads promoted versions ahead.
    ids = [
        stack.upload(png(90 + i), filename=f"warm{i}.png", patient_id=f"WARM-{i}")["prediction_id"]
        for i in range(6)
    ]
    rows = stack.wait_finished(ids, timeout=120)
    assert {row["status"] for row in rows.values()} == {"done"}, rows
    children = [pid for w in stack.workers if w.alive() for pid in w.children()]
    wait_for(
        lambda: all(_threads(pid) == 2 for pid in children),
        timeout=30,
        what=f"two threads in each pool process: {[_threads(pid) for pid in children]}",
    )


def test_a_promoted_version_is_loaded_before_its_first_prediction(stack):
    workers = list(stack.workers)
    for worker in workers:
        wait_for(
            lambda w=worker: "loaded ahead of the first task" in w.log_text(),
            timeout=120,
            what=f"the production model loaded by {worker.name}",
        )
    stack.manage(
        "import_model",
        str(stack.tmp / "mobilenet_v2-2.pt"),
        "--arch",
        "mobilenet_v2",
        "--classes",
        ",".join(CLASSES),
        "--name",
        "faults-promoted",
        "--promote",
        "--override-reason",
        "fault tests: random weights",
        timeout=300,
    )
    ahead = "faults-promoted loaded ahead of the first prediction since its promotion"
    for worker in workers:  # each polls every CXR_WORKER_WARM_POLL_S (1 s here)
        wait_for(
            lambda w=worker: ahead in w.log_text(),
            timeout=60,
            what=f"the promoted version loaded by {worker.name} before any task",
        )
    ids = [
        stack.upload(png(120 + i), filename=f"promoted{i}.png", patient_id=f"PROMOTED-{i}")[
            "prediction_id"
        ]
        for i in range(4)
    ]
    rows = stack.wait_finished(ids, timeout=120)
    assert {row["status"] for row in rows.values()} == {"done"}, rows
    for worker in workers:  # loaded once per pool process (one each here): ahead, not on use
        assert worker.log_text().count("loaded model version faults-promoted ") == 1, (
            worker.log_tail()
        )


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("Threads:")).split()[1])
