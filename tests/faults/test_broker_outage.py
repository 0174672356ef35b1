"""Redis stops and comes back empty in the middle of a run of uploads; Redis hangs.

Uploads are still accepted while the broker is down (the task is sent after the commit and a
failed send does not undo the upload); the messages that were in Redis are lost with it; the
reconciler sends everything again once Redis is back, and every prediction is done exactly once.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from tests.faults.client import png
from tests.faults.config import TIMINGS

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _prompt_uploads(stack, seeds: list[int], name: str, patient: str) -> list[dict]:
    """Upload one image per seed while the broker is unusable: each is stored (201) and
    answered within seconds, whatever the broker does."""
    uploads = []
    for i, seed in enumerate(seeds):
        started = time.monotonic()
        resp = stack.api.upload(
            png(seed), filename=f"{name}-{i}.png", patient_id=f"{patient}{i}", timeout=60
        )
        elapsed = time.monotonic() - started
        assert resp.status == 201, (resp.status, resp.body[:500])
        # Two sends of CXR_BROKER_TIMEOUT_S (2 s) each at most; a hung one would wait for the
        # client's timeout (60 s). Generous, for a busy machine.
        assert elapsed < 30, f"upload {name}-{i} took {elapsed:.1f}s with the broker unusable"
        body = resp.json()
        uploads.append({"prediction_id": body["prediction_id"], "image_id": body["image_id"]})
    return uploads


def test_uploads_survive_a_redis_restart_and_the_reconciler_resends_what_was_lost(stack):
    workers = list(stack.workers)
    # Workers paused: the first uploads' messages wait in Redis, and are lost with it.
    for worker in workers:
        worker.signal_group(signal.SIGSTOP)
    try:
        before = [
            stack.upload(png(200 + i), filename=f"before-{i}.png", patient_id=f"FAULT-REDIS-{i}")
            for i in range(4)
        ]
        # A paused worker may already hold one message in its socket; the rest are in Redis.
        waiting = stack.redis.client().llen("inference")
        assert waiting >= len(before) - len(workers), waiting
        stack.redis.stop()
    finally:
        for worker in workers:
            worker.signal_group(signal.SIGCONT)
    assert not stack.redis.ping()

    during = _prompt_uploads(stack, [210 + i for i in range(4)], "during", "FAULT-REDIS-D")
    rows = stack.predictions([u["prediction_id"] for u in during])
    assert {r["status"] for r in rows.values()} == {"queued"}, rows
    assert {r["dispatches"] for r in rows.values()} == {0}, rows  # a failed send is not counted
    # ... and is due at the reconciler's next run, not after its deadline for lost messages.
    due = stack.sql(
        "SELECT now() - make_interval(secs => %s) AS t", (TIMINGS["CXR_RECONCILE_QUEUED_AFTER_S"],)
    )[0]["t"]
    assert all(r["last_dispatched_at"] < due for r in rows.values()), rows

    stack.redis.start()  # same port, empty
    assert stack.redis.client().llen("inference") == 0

    uploads = before + during
    ids = [u["prediction_id"] for u in uploads]
    rows = stack.wait_finished(ids, timeout=150, what="the lost predictions to be re-sent and done")
    assert {r["status"] for r in rows.values()} == {"done"}, rows
    assert all(r["attempts"] == 1 for r in rows.values()), rows  # each ran exactly once
    # Each one uploaded while Redis was down was sent again by the reconciler, or analysed in a
    # micro-batch beside a prediction whose message did arrive (same worker, same claim time).
    batches = Counter((r["worker"], r["started_at"]) for r in rows.values())
    for u in during:
        r = rows[u["prediction_id"]]
        assert r["dispatches"] >= 1 or batches[(r["worker"], r["started_at"])] > 1, rows
    image_ids = [u["image_id"] for u in uploads]
    assert stack.predictions_per_image(image_ids) == {i: 1 for i in image_ids}
    for worker in workers:
        assert worker.alive(), f"{worker.name} died:\n{worker.log_tail()}"
    assert stack.beat.alive(), f"beat died:\n{stack.beat.log_tail()}"


def test_a_hung_broker_does_not_hang_uploads(stack):
    """Redis stops answering without closing its connections (paused: a hung server, a half-open
    link). Uploads still answer within seconds (every broker command times out), and once Redis
    answers again every prediction is done exactly once."""
    stack.redis.proc.signal_group(signal.SIGSTOP)
    try:
        uploads = _prompt_uploads(stack, [230 + i for i in range(3)], "hung", "FAULT-HUNG-")
    finally:
        stack.redis.proc.signal_group(signal.SIGCONT)
    assert stack.redis.ping()

    ids = [u["prediction_id"] for u in uploads]
    rows = stack.wait_finished(
        ids, timeout=150, what="the predictions uploaded while the broker hung to be done"
    )
    assert {r["status"] for r in rows.values()} == {"done"}, rows
    assert all(r["attempts"] == 1 for r in rows.values()), rows
    image_ids = [u["image_id"] for u in uploads]
    assert stack.predictions_per_image(image_ids) == {i: 1 for i in image_ids}
    for worker in stack.workers:
        assert worker.alive(), f"{worker.name} died:\n{worker.log_tail()}"


def test_a_worker_survives_redis_stopping_under_a_running_prediction(stack):
    """Redis stops while a worker runs a prediction (its message not yet acknowledged), then
    comes back empty. Celery 5.7 took the whole worker down here ("Unrecoverable error", see
    cxrweb.celery) when it had two pool processes, as `make run` starts it on two cores; now
    the prediction finishes once, and the worker takes new work."""
    for worker in stack.workers:
        worker.stop(timeout=20)
    stack.workers.clear()
    worker = stack.start_worker(concurrency=2)
    try:
        up = stack.upload(png(240, size=384), filename="slow-240.png", patient_id="FAULT-REDIS-RUN")
        pid = up["prediction_id"]
        deadline = time.monotonic() + 60
        while stack.predictions([pid])[pid]["status"] != "running":
            assert time.monotonic() < deadline, "the prediction never started"
            time.sleep(0.05)
        stack.redis.stop()  # mid-flight: the model takes 3 s over slow-* files
        time.sleep(1.0)
        stack.redis.start()

        rows = stack.wait_finished([pid], timeout=120, what="the prediction in flight to finish")
        assert rows[pid]["status"] == "done" and rows[pid]["attempts"] == 1, rows
        assert worker.alive(), f"the worker died:\n{worker.log_tail()}"
        assert "Unrecoverable error" not in worker.log_text(), worker.log_tail()
        after = stack.upload(png(241), filename="after-redis.png", patient_id="FAULT-REDIS-RUN2")
        rows = stack.wait_finished(
            [after["prediction_id"]], timeout=150, what="an upload after the restart to be analysed"
        )
        assert rows[after["prediction_id"]]["status"] == "done", rows
        image_ids = [up["image_id"], after["image_id"]]
        assert stack.predictions_per_image(image_ids) == {i: 1 for i in image_ids}
    finally:  # the next test starts from the usual workers (one pool process each)
        worker.stop(timeout=20)
        stack.workers.remove(worker)
