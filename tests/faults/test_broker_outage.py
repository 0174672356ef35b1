"""Redis stops and comes back empty in the middle of a run of uploads.

Uploads are still accepted while the broker is down (the task is sent after the commit and a
failed send does not undo the upload); the messages that were in Redis are lost with it; the
reconciler sends everything again once Redis is back, and every prediction is done exactly once.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from tests.faults.conftest import TIMINGS, png

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_uploads_survive_a_redis_restart_and_the_reconciler_resends_what_was_lost(stack):
    workers = list(stack.workers)
    # Workers paused: the first uploads' messages wait in Redis, and are lost with it.
    for worker in workers:
        worker.signal_group(signal.SIGSTOP)
    try:
        before = [stack.upload(png(200 + i), filename=f"before-{i}.png",
                               patient_id=f"FAULT-REDIS-{i}") for i in range(4)]
        # A paused worker may already hold one message in its socket; the rest are in Redis.
        waiting = stack.redis.client().llen("inference")
        assert waiting >= len(before) - len(workers), waiting
        stack.redis.stop()
    finally:
        for worker in workers:
            worker.signal_group(signal.SIGCONT)
    assert not stack.redis.ping()

    during = []
    for i in range(4):
        started = time.monotonic()
        resp = stack.api.upload(png(210 + i), filename=f"during-{i}.png",
                                patient_id=f"FAULT-REDIS-D{i}", timeout=60)
        elapsed = time.monotonic() - started
        assert resp.status == 201, (resp.status, resp.body[:500])
        assert elapsed < 15, f"an upload with the broker down took {elapsed:.1f}s"
        body = resp.json()
        during.append({"prediction_id": body["prediction_id"], "image_id": body["image_id"]})
    rows = stack.predictions([u["prediction_id"] for u in during])
    assert {r["status"] for r in rows.values()} == {"queued"}, rows
    assert {r["dispatches"] for r in rows.values()} == {0}, rows  # a failed send is not counted
    # ... and is due at the reconciler's next run, not after its deadline for lost messages.
    due = stack.sql("SELECT now() - make_interval(secs => %s) AS t",
                    (TIMINGS["CXR_RECONCILE_QUEUED_AFTER_S"],))[0]["t"]
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
