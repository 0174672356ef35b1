"""A poison image (the model crashes on it; CXR_FAULT_INJECTION=true and "poison" in the file
name) ends failed with its error after CXR_PREDICTION_MAX_ATTEMPTS, and never blocks the queue:
normal images uploaded after it are analysed meanwhile."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.client import png
from tests.faults.config import TIMINGS

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_a_poison_image_fails_after_the_retry_limit_without_blocking_the_queue(stack):
    max_attempts = TIMINGS["CXR_PREDICTION_MAX_ATTEMPTS"]
    workers = list(stack.workers)
    # Queue the poison first and the normal images behind it (workers paused meanwhile), so
    # every retry of the poison goes to the back of the queue, behind them.
    for worker in workers:
        worker.signal_group(signal.SIGSTOP)
    try:
        poison = stack.upload(png(400), filename="chest-poison.png", patient_id="FAULT-POISON")
        normals = [
            stack.upload(png(401 + i), filename=f"chest-{i}.png", patient_id=f"FAULT-POISON-N{i}")
            for i in range(6)
        ]
    finally:
        for worker in workers:
            worker.signal_group(signal.SIGCONT)

    ids = [poison["prediction_id"], *(n["prediction_id"] for n in normals)]
    rows = stack.wait_finished(ids, timeout=90)
    bad = rows[poison["prediction_id"]]
    assert bad["status"] == "failed", bad
    assert bad["attempts"] == max_attempts, bad
    assert "injected fault: the model crashed on this image" in bad["error"], bad
    assert f"Failed {max_attempts} times" in bad["error"], bad
    good = [rows[n["prediction_id"]] for n in normals]
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in good), good
    # The normal images did not wait for the poison's retries to run out.
    assert min(r["finished_at"] for r in good) < bad["finished_at"], (good, bad)

    body = stack.api.prediction(poison["prediction_id"])
    assert body["status"] == "failed", body
    assert "injected fault" in body["error"] and body["message"].startswith("Analysis failed")
    assert body["heatmap_url"] is None
    # It stays failed: no further retries, the reconciler leaves it alone.
    time.sleep(2 * TIMINGS["CXR_RECONCILE_EVERY_S"] + 1)
    again = stack.predictions([poison["prediction_id"]])[poison["prediction_id"]]
    assert (again["status"], again["attempts"]) == ("failed", max_attempts), again
