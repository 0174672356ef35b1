"""One model server per GPU for an inference worker (CXR_MODEL_SERVER; the server itself is
:mod:`training.ml.infer.server`).

Started by the worker's main process before its pool forks (diagnosis.worker.process); the
addresses and the random key reach the pool processes through their inherited environment, and
diagnosis.worker.compute sends their images there. A supervising thread starts a server again
when it exits (killed, out of memory); the pool processes wait for it and send again, so a lost
server costs time, not predictions. The servers are stopped with the worker, and stop by
themselves when the worker's main process is gone.

The worker's main process must not create a CUDA context (it would not survive the fork): the
GPUs are counted through NVML, and nothing here runs a model.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING

from django.conf import settings

from diagnosis.worker.errors import PredictionFailure
from training.ml.infer.remote import ModelServerClient, ModelServerUnavailable, RemotePredictor
from training.ml.infer.server import AUTHKEY_ENV, ModelSpec

if TYPE_CHECKING:
    from training.models import ModelVersion

logger = logging.getLogger(__name__)

SOCKETS_ENV = "CXR_MODEL_SERVER_SOCKETS"  # comma-separated, set for the pool processes
# A server that exits sooner than this after its start counts as crashing: the next start waits.
_CRASH_WINDOW_S = 10.0


def gpu_count() -> int:
    """CUDA devices this host shows the worker, counted without initialising CUDA here."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    try:
        import torch

        return torch.cuda.device_count() if torch.backends.cuda.is_built() else 0
    except Exception:  # noqa: BLE001 - no usable CUDA: the CPU topology
        logger.warning("could not count the GPUs; running the model in the pool processes")
        return 0


def client_address() -> tuple[str, bytes] | None:
    """In a pool process: the server it sends to (processes spread over the GPUs by pid) and the
    key; None when this worker runs no server."""
    sockets = [s for s in os.environ.get(SOCKETS_ENV, "").split(",") if s]
    key = os.environ.get(AUTHKEY_ENV, "")
    if not sockets or not key:
        return None
    return sockets[os.getpid() % len(sockets)], bytes.fromhex(key)


_client_lock = threading.Lock()
_client: tuple[int, ModelServerClient] | None = None  # this process's, by pid (not inherited)


def remote_predictor(version: ModelVersion, path: str) -> RemotePredictor:
    """In a pool process: ``version``'s model, loaded in this worker's model server (its weights
    file at ``path`` checked by the caller, diagnosis.worker.compute); the server loads the same
    files. A load the server refuses is the version's PredictionFailure."""
    global _client
    from training.ml.errors import MLError

    address = client_address()
    assert address is not None
    with _client_lock:
        if _client is None or _client[0] != os.getpid():
            _client = (os.getpid(), ModelServerClient(*address))
        client = _client[1]
    spec = ModelSpec(
        key=f"{version.pk}:{version.sha256}:{version.calibration_number}",
        path=path,
        arch=version.architecture,
        classes=tuple(version.class_labels),
        preprocessing=version.preprocessing_dict(),
        temperature=version.temperature or 1.0,
        freeze=settings.CXR_INFERENCE_FREEZE,
        ood_reference=version.ood_reference.path if version.ood_reference else None,
    )
    try:
        predictor = RemotePredictor(client, spec).load()
    except ModelServerUnavailable:
        raise  # nothing wrong with the version: the predictions go back to the queue
    except MLError as exc:
        raise PredictionFailure(f"Model version {version.name} cannot be loaded: {exc}") from exc
    logger.info("model version %s runs in the model server on %s", version.name, predictor.device)
    return predictor


class ModelServers:
    """The worker's servers: started, watched and started again, stopped."""

    def __init__(self, gpus: int) -> None:
        self.gpus = gpus
        self.count = gpus or 1  # one per GPU; one on a CPU (CXR_MODEL_SERVER=on)
        self.folder = tempfile.mkdtemp(prefix="cxr-model-server-")  # 0700: this user only
        self.key = secrets.token_hex(32)
        self.sockets = [os.path.join(self.folder, f"gpu{i}.sock") for i in range(self.count)]
        self.procs: list[subprocess.Popen | None] = [None] * self.count
        self.started_at = [0.0] * self.count
        self.crashes = [0] * self.count
        self.stopped = threading.Event()
        self.owner = os.getpid()  # a forked pool process inherits this object, never stops them

    def _argv(self, index: int) -> list[str]:
        device = f"cuda:{index}" if self.gpus else "cpu"
        threads = settings.CXR_MODEL_SERVER_THREADS
        if threads <= 0:
            share = max(1, (os.cpu_count() or 1) // self.count)
            threads = min(4, share) if self.gpus else share
        return [
            sys.executable,
            "-m",
            "training.ml.infer.server",
            "--socket",
            self.sockets[index],
            "--device",
            device,
            "--max-batch",
            str(settings.CXR_MODEL_SERVER_BATCH),
            "--wait-ms",
            str(settings.CXR_MODEL_SERVER_WAIT_MS),
            "--threads",
            str(threads),
            "--parent",
            str(os.getpid()),
        ]

    def _spawn(self, index: int) -> None:
        # PASSIVE: torch's OpenMP threads sleep between passes instead of spinning for the
        # cores the pool processes need to decode and render (on a CPU host, 4x the CPU per
        # prediction without it: bench/RESULTS.md).
        env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, AUTHKEY_ENV: self.key}
        proc = subprocess.Popen(self._argv(index), env=env, stdin=subprocess.DEVNULL)
        self.procs[index] = proc
        self.started_at[index] = time.monotonic()
        logger.info("model server %d started (pid %d): %s", index, proc.pid, self.sockets[index])

    def start(self) -> None:
        for index in range(self.count):
            self._spawn(index)
        os.environ[SOCKETS_ENV] = ",".join(self.sockets)
        os.environ[AUTHKEY_ENV] = self.key
        threading.Thread(target=self._supervise, name="model-servers", daemon=True).start()
        atexit.register(self.stop)

    def _supervise(self) -> None:
        while not self.stopped.wait(1.0):
            for index, proc in enumerate(self.procs):
                if proc is None or proc.poll() is None:
                    continue
                lived = time.monotonic() - self.started_at[index]
                self.crashes[index] = self.crashes[index] + 1 if lived < _CRASH_WINDOW_S else 0
                logger.error(
                    "model server %d (pid %d) exited with %s after %.0f s; starting it again",
                    index,
                    proc.pid,
                    proc.returncode,
                    lived,
                )
                if self.crashes[index] and self.stopped.wait(min(30.0, 2.0 ** self.crashes[index])):
                    return
                self._spawn(index)

    def stop(self) -> None:
        if self.stopped.is_set() or os.getpid() != self.owner:
            return
        self.stopped.set()
        running = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


_servers: ModelServers | None = None


def start_for_worker(log: logging.Logger) -> None:
    """In the worker's main process, before the pool forks: start the servers it should run (one
    per GPU; on a host without one, one only when CXR_MODEL_SERVER is on)."""
    global _servers
    if settings.CXR_MODEL_SERVER == "off" or _servers is not None:
        return
    gpus = gpu_count()
    if not gpus and settings.CXR_MODEL_SERVER != "on":
        return  # auto on a host without a GPU: the model runs in each pool process
    _servers = ModelServers(gpus)
    _servers.start()
    log.info(
        "the model runs in %d model server(s) on %s; the pool processes decode and render",
        _servers.count,
        "the GPU" if _servers.gpus else "the CPU",
    )


def stop_for_worker() -> None:
    if _servers is not None:
        _servers.stop()
