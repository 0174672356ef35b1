"""A worker dies in the middle of a prediction: the prediction still completes, exactly once.

- the pool child is SIGKILLed: Celery sees the lost child and (acks_late +
  reject_on_worker_lost) puts the message back; the claim takes the row over from the dead pid;
- the whole worker (main process and child) is SIGKILLed: its message stays unacked in Redis
  until the visibility timeout (3 x CXR_TASK_TIME_LIMIT = 180 s here), so the reconciler (beat)
  must send it again: at once when the dead claimer was on this host, after
  CXR_PREDICTION_STALE_AFTER_S when it was on another host;
- a prediction whose worker dies every time ends failed after CXR_PREDICTION_MAX_ATTEMPTS;
- a worker whose pool child died gets a working child back.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import wait_for
from tests.faults.client import png
from tests.faults.config import TIMINGS
from tests.faults.midflight import assert_heatmap_fetchable, catch_mid_flight, freeze_when_running
from tests.faults.processes import pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _assert_done_once(stack, caught, *, attempts: int = 2) -> dict:
    row = stack.wait_finished([caught.prediction_id], timeout=120)[caught.prediction_id]
    assert row["status"] == "done", row
    assert row["attempts"] == attempts, row
    assert row["error"] == "", row
    assert row["worker"] != caught.worker_identity, row
    assert stack.predictions_per_image([caught.image_id]) == {caught.image_id: 1}
    assert_heatmap_fetchable(stack, caught.prediction_id)
    return row


def test_a_pool_child_killed_mid_prediction_is_redelivered_and_completes_once(stack):
    caught = catch_mid_flight(stack, patient_id="FAULT-CHILD", seeds=range(100, 110))
    os.kill(caught.pid, signal.SIGKILL)
    worker = caught.worker
    # The worker's main process survives, sees the lost child and puts the message back.
    wait_for(
        lambda: "signal 9" in worker.log_text(),
        timeout=30,
        what="the worker to report its lost child",
    )
    assert worker.alive()

    _assert_done_once(stack, caught)
    # Later deliveries (the requeued message, the reconciler's) never run it a third time.
    time.sleep(2 * TIMINGS["CXR_RECONCILE_EVERY_S"] + 1)
    row = stack.predictions([caught.prediction_id])[caught.prediction_id]
    assert (row["status"], row["attempts"]) == ("done", 2), row


def test_a_whole_worker_killed_mid_prediction_is_resent_by_the_reconciler(stack):
    caught = catch_mid_flight(stack, patient_id="FAULT-MAIN", seeds=range(120, 130))
    caught.worker.kill_group()  # main process and pool child: nothing is left to requeue it
    assert not caught.worker.alive() and not pid_alive(caught.pid)
    # Its message is unacknowledged in Redis, and would only come back after the visibility
    # timeout (180 s): what brings it back sooner is the reconciler.
    assert stack.redis.client().hlen("unacked") >= 1
    stack.start_worker()

    row = _assert_done_once(stack, caught)
    assert row["dispatches"] >= 2, row  # sent again by the reconciler


def _unshare_works() -> bool:
    try:
        return (
            subprocess.run(["unshare", "-u", "true"], capture_output=True, timeout=10).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_a_worker_lost_on_another_host_is_taken_over_once_its_claim_is_stale(stack):
    """The dead claimer ran on another host (a UTS namespace with another host name), so no
    one can check its pid: the reconciler must wait CXR_PREDICTION_STALE_AFTER_S, then re-send."""
    if not _unshare_works():
        pytest.skip("`unshare -u` is not permitted here: cannot fake another host")
    for worker in list(stack.workers):
        worker.stop()
    stack.workers.clear()
    remote = stack.start_worker(hostname="faults-otherhost")
    caught = catch_mid_flight(stack, patient_id="FAULT-REMOTE", seeds=range(140, 150))
    assert caught.worker_identity.startswith("faults-otherhost:"), caught
    remote.kill_group()
    stack.start_worker()  # a worker on this host

    row = _assert_done_once(stack, caught)
    stale = dt.timedelta(seconds=TIMINGS["CXR_PREDICTION_STALE_AFTER_S"])
    # Taken over only once the claim was stale, not while it might still be running elsewhere.
    assert row["started_at"] >= caught.started_at + stale, (row, caught)
    assert row["dispatches"] >= 2, row


def _kill_child_and_replace_worker(stack, caught) -> None:
    """SIGKILL the pool child mid-prediction; once its worker has seen the loss (and put the
    message back), replace that worker: its new pool children never come up (see
    test_a_worker_gets_a_working_pool_child_back_after_losing_one)."""
    os.kill(caught.pid, signal.SIGKILL)
    wait_for(
        lambda: "signal 9" in caught.worker.log_text(),
        timeout=30,
        what=f"{caught.worker.name} to report its lost child",
    )
    caught.worker.kill_group()
    stack.workers.remove(caught.worker)
    stack.start_worker(wait=False)


def test_a_prediction_whose_worker_dies_every_time_ends_failed_after_the_attempt_limit(stack):
    """Late ack + reject_on_worker_lost would redeliver such a message forever: the attempt
    count kept in the row stops it."""
    import psycopg

    max_attempts = TIMINGS["CXR_PREDICTION_MAX_ATTEMPTS"]
    caught = catch_mid_flight(stack, patient_id="FAULT-LOOP", seeds=range(160, 170))
    prediction_id = caught.prediction_id
    killed: list[str] = []
    with psycopg.connect(stack.pg.url(), autocommit=True, connect_timeout=5) as conn:
        while True:
            _kill_child_and_replace_worker(stack, caught)
            killed.append(caught.worker_identity)
            # The row counts every claim, also one by a child the test did not see (a retiring
            # worker's respawned child): the loop ends when the row says it gave up.
            caught = freeze_when_running(
                stack, conn, prediction_id, timeout=90, not_by=tuple(killed)
            )
            if caught is None:
                break
            assert len(killed) <= max_attempts, (
                f"still claimed after {len(killed)} deaths: {stack.predictions([prediction_id])}"
            )

    row = stack.wait_finished([prediction_id], timeout=60)[prediction_id]
    assert row["status"] == "failed", row
    assert f"Gave up after {max_attempts} attempts" in row["error"], row
    assert row["attempts"] in (max_attempts, max_attempts + 1), row
    body = stack.api.prediction(prediction_id)
    assert body["status"] == "failed" and "Gave up" in body["error"], body
    # And it stays failed: it is not picked up again.
    time.sleep(2 * TIMINGS["CXR_RECONCILE_EVERY_S"] + 1)
    assert stack.predictions([prediction_id])[prediction_id]["status"] == "failed"


def test_workers_that_lost_their_pool_children_get_working_children_back(stack):
    """Both workers lose their pool child at once (as when the kernel's OOM killer picks the
    biggest processes, the torch children); the next uploads must still be analysed."""
    lost = {worker.name: worker.children() for worker in stack.workers}
    for pids in lost.values():
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    for worker in stack.workers:
        wait_for(
            lambda w=worker: "signal 9" in w.log_text(),
            timeout=30,
            what=f"{worker.name} to report its lost child",
        )

    ups = [
        stack.upload(png(180 + i), filename=f"after-child-loss-{i}.png", patient_id="FAULT-RESPAWN")
        for i in range(2)
    ]
    ids = [u["prediction_id"] for u in ups]
    try:  # ~15 s on an idle machine (two new children loading the model at once): generous
        rows = stack.wait_finished(ids, timeout=150)
    finally:
        for worker in stack.workers:
            print(
                f"\n{worker.name}: {worker.log_text().count('Timed out waiting for UP')} "
                "replacement children killed for not coming up within 4 s"
            )
    assert {r["status"] for r in rows.values()} == {"done"}, rows
