"""Catching a prediction mid-flight: its pool child stopped between its claim and its result."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from tests.faults.client import png
from tests.faults.processes import Proc
from tests.faults.stack import FaultStack


@dataclass
class MidFlight:
    prediction_id: int
    image_id: int
    pid: int  # the pool child running it, left stopped (SIGSTOP)
    worker_identity: str  # "host:pid" as the row records it
    worker: Proc  # the Celery worker (main process) the child belongs to
    started_at: object  # the row's started_at when it was caught


_ROW = "SELECT status, worker, started_at FROM diagnosis_prediction WHERE id = %s"


def freeze_when_running(
    stack: FaultStack,
    conn,
    prediction_id: int,
    *,
    timeout: float = 120,
    not_by: tuple[str, ...] = (),
) -> MidFlight | None:
    """Wait until the prediction is *running* (claimed by a process not in `not_by`), and freeze
    it there: SIGSTOP the pool child named by the row's `worker` field, then read the row again
    a moment later. If it still says running by that child, the child is stopped between its
    claim and its result, i.e. mid-prediction: return it, left stopped. If the prediction
    finished first, return None (the child is resumed)."""
    deadline = time.monotonic() + timeout
    skip = set(not_by)
    while True:
        status, worker_identity, started_at = conn.execute(_ROW, (prediction_id,)).fetchone()
        if status in ("done", "failed"):
            return None
        if status == "running" and worker_identity not in skip:
            pid = int(worker_identity.rsplit(":", 1)[1])
            worker = stack.worker_for_pid(pid)
            if worker is not None and pid != worker.pid:
                break
            # Claimed by a child of a worker the test is retiring (it respawned a child that
            # took the redelivered message before the worker was stopped): that child dies with
            # its worker; wait for the next claim.
            skip.add(worker_identity)
        assert time.monotonic() < deadline, (
            f"prediction {prediction_id} still {status} after {timeout}s"
        )
        time.sleep(0.003)
    os.kill(pid, signal.SIGSTOP)
    time.sleep(0.2)  # anything the child had already sent reaches the database
    status, again, _ = conn.execute(_ROW, (prediction_id,)).fetchone()
    if status == "running" and again == worker_identity:
        image_id = stack.predictions([prediction_id])[prediction_id]["image_id"]
        return MidFlight(prediction_id, image_id, pid, worker_identity, worker, started_at)
    os.kill(pid, signal.SIGCONT)
    return None


def catch_mid_flight(
    stack: FaultStack, *, patient_id: str, seeds, size: int = 384, timeout: float = 120
) -> MidFlight:
    """Upload images one at a time until one is caught mid-prediction (see
    freeze_when_running); its pool child is left stopped. The files are named slow-*.png: with
    CXR_FAULT_INJECTION the model takes 3 s over each, so a run is never over before the test
    has seen it start (also a redelivered one, picked up while the test is still replacing the
    worker it killed)."""
    import psycopg

    with psycopg.connect(stack.pg.url(), autocommit=True, connect_timeout=5) as conn:
        for seed in seeds:
            up = stack.upload(
                png(seed, size=size), filename=f"slow-{seed}.png", patient_id=patient_id
            )
            caught = freeze_when_running(stack, conn, up["prediction_id"], timeout=timeout)
            if caught is not None:
                return caught
    raise AssertionError("never caught a prediction mid-flight")


def assert_heatmap_fetchable(stack: FaultStack, prediction_id: int) -> None:
    body = stack.api.prediction(prediction_id)
    assert body["status"] == "done", body
    assert body["heatmap_url"], body
    resp = stack.api.request("GET", body["heatmap_url"])
    assert resp.status == 200, (resp.status, resp.body[:300])
    assert resp.headers.get("Content-Type") == "image/png", resp.headers
    assert resp.body.startswith(b"\x89PNG\r\n\x1a\n")
