"""200 uploads at once from 8 clients, then every worker restarted while predictions are still
in progress (one warm shutdown with SIGTERM, one SIGKILL of the whole worker): all 200
predictions end done, none duplicated, within a bounded time."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import wait_for
from tests.faults.client import png
from tests.faults.config import TIMINGS

pytestmark = [pytest.mark.integration, pytest.mark.faults]

UPLOADS = 200
CLIENTS = 8


def test_200_uploads_then_every_worker_restarted_all_done_exactly_once(stack):
    images = {i: png(1000 + i) for i in range(UPLOADS)}
    started = time.monotonic()

    def upload(i: int) -> dict:
        return stack.upload(images[i], filename=f"load-{i}.png", patient_id=f"FAULT-LOAD-{i}")

    # The workers are paused while the uploads go in, so that most predictions are still
    # pending when the workers are restarted, however fast or busy this machine is.
    workers = list(stack.workers)
    for worker in workers:
        worker.signal_group(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            uploads = list(pool.map(upload, range(UPLOADS)))
    finally:
        for worker in workers:
            worker.signal_group(signal.SIGCONT)
    uploaded_s = time.monotonic() - started
    ids = [u["prediction_id"] for u in uploads]
    image_ids = [u["image_id"] for u in uploads]
    assert len(set(ids)) == UPLOADS and len(set(image_ids)) == UPLOADS

    def started_some():  # the workers are at work: the restart comes mid-run
        rows = stack.predictions(ids)
        return rows if any(r["status"] != "queued" for r in rows.values()) else None

    rows = wait_for(started_some, timeout=120, interval=0.05, what="the workers to start")
    pending = [r for r in rows.values() if r["status"] in ("queued", "running")]
    assert len(pending) >= 20, f"only {len(pending)} predictions still pending: nothing to restart"

    warm, killed = workers
    killed.kill_group()  # all of it, mid-run: its message stays unacked in Redis
    t = time.monotonic()
    code = warm.stop(timeout=60, sig=signal.SIGTERM)  # warm shutdown: finishes its task
    warm_s = time.monotonic() - t
    assert code == 0 and warm_s < 60, (code, warm_s, warm.log_tail())
    stack.workers.clear()
    for _ in range(2):
        stack.start_worker(wait=False)
    for worker in stack.workers:
        stack.wait_worker_ready(worker)

    rows = stack.wait_finished(ids, timeout=300, what=f"{UPLOADS} predictions to finish")
    total_s = time.monotonic() - started
    print(
        f"\n{UPLOADS} uploads in {uploaded_s:.1f}s, {len(pending)} pending at the restart, "
        f"warm shutdown {warm_s:.1f}s, all done after {total_s:.1f}s"
    )
    assert {r["status"] for r in rows.values()} == {"done"}, [
        r for r in rows.values() if r["status"] != "done"
    ][:5]
    assert all(r["attempts"] >= 1 for r in rows.values())
    # At most the one micro-batch running in the SIGKILLed worker ran twice.
    batch = TIMINGS["CXR_INFERENCE_BATCH_SIZE"]
    assert sum(r["attempts"] for r in rows.values()) <= UPLOADS + batch, sorted(
        (r["id"], r["attempts"]) for r in rows.values() if r["attempts"] > 1
    )
    per_image = stack.predictions_per_image(image_ids)
    assert per_image == {i: 1 for i in image_ids}
    assert (
        len(stack.sql("SELECT id FROM diagnosis_prediction WHERE image_id = ANY(%s)", (image_ids,)))
        == UPLOADS
    )
