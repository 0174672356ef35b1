"""A worker that runs its model in a model server (CXR_MODEL_SERVER, the GPU host's topology,
forced here on a CPU): its pool processes share one loaded model, and losing the server (killed,
out of memory) loses no prediction: the worker starts it again and the pool processes send
again."""

from __future__ import annotations

import os
import signal

import pytest

from tests.conftest import process_running, wait_for
from tests.faults.client import png

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVER_MODULE = "training.ml.infer.server"


def _server_pids(worker) -> list[int]:
    pids = []
    for pid in worker.children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if SERVER_MODULE.encode() in argv:
            pids.append(pid)
    return pids


def _upload(stack, first_seed: int, n: int, tag: str) -> list[int]:
    return [
        stack.upload(png(first_seed + i), filename=f"{tag}{i}.png", patient_id=f"{tag}-{i}")[
            "prediction_id"
        ]
        for i in range(n)
    ]


def test_a_model_server_worker_shares_one_model_and_survives_losing_it(stack):
    for base in list(stack.workers):  # every prediction of this test goes through the server
        base.stop(timeout=20)
    stack.workers.clear()
    worker = stack.start_worker(concurrency=2, extra_env={"CXR_MODEL_SERVER": "on"})
    try:
        [server] = wait_for(
            lambda: _server_pids(worker), timeout=60, what="the worker's model server"
        )
        assert "the model runs in 1 model server(s) on the CPU" in worker.log_text()
        rows = stack.wait_finished(_upload(stack, 300, 6, "SRV"), timeout=180)
        assert {row["status"] for row in rows.values()} == {"done"}, rows
        log = worker.log_text()
        # One model loaded, in the server, for both pool processes; none in the pool processes.
        assert log.count("/model-server] loaded ") == 1, log[-4000:]
        assert "runs in the model server on cpu" in log
        assert "loaded model version faults-mobilenet" not in log

        os.kill(server, signal.SIGKILL)  # the server dies; uploads keep coming
        ids = _upload(stack, 320, 6, "SRVLOST")
        replaced = wait_for(
            lambda: [p for p in _server_pids(worker) if p != server],
            timeout=60,
            what="a new model server",
        )
        rows = stack.wait_finished(ids, timeout=240)
        assert {row["status"] for row in rows.values()} == {"done"}, rows
        log = worker.log_text()
        assert f"model server 0 (pid {server}) exited with -9" in log, log[-4000:]
        assert _server_pids(worker) == replaced
        assert worker.alive()
    finally:
        worker.stop(timeout=20)
        stack.workers.remove(worker)
    # Stopped with its worker: the servers are the worker's children, gone with it.
    wait_for(
        lambda: not any(process_running(pid) for pid in [server, *replaced]),
        timeout=30,
        what="the model servers to stop with their worker",
    )
