"""A model server: one process per GPU that runs the model for every process of a worker.

On a GPU host, a Celery worker's pool processes would each create their own CUDA context (about
1 GB of host memory each, and a GPU that sees batches of one process's size at a time). Instead
the worker starts one of these per GPU (``diagnosis.worker.model_servers``): the pool processes
read, decode and resize their images on the CPU (:func:`~training.ml.preprocessing.to_gray_input`),
send the grayscale arrays here over a Unix socket (:mod:`training.ml.infer.remote`), and render
the PNGs and write the database themselves. This process batches what arrives from all of them,
up to ``max_batch`` images of the same model version, and runs the forward and Grad-CAM pass
(:meth:`Predictor.predict_gray`) once per batch.

The protocol is :mod:`multiprocessing.connection` (length-prefixed pickles, with an HMAC
challenge on connect: only a process given the worker's random key can talk to it). A request
that fails in a batch of several is run again alone, so an image at fault fails only its own
request. The server exits when its parent (the worker's main process) is gone.

Run: ``python -m training.ml.infer.server --socket PATH --device cuda:0`` with the key, in hex, in
``CXR_MODEL_SERVER_AUTHKEY``. No Django here: the ML core's own process.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Listener
from typing import Any

import numpy as np

from ..errors import MLError

__all__ = ["AUTHKEY_ENV", "ModelSpec", "ModelServer", "main"]

log = logging.getLogger("cxr.model_server")

AUTHKEY_ENV = "CXR_MODEL_SERVER_AUTHKEY"


@dataclass(frozen=True)
class ModelSpec:
    """What the server needs to load one model version; ``key`` names it (the worker's cache key:
    version, weights' sha256, calibration), so that a new calibration is a new model."""

    key: str
    path: str
    arch: str
    classes: tuple[str, ...]
    preprocessing: dict
    temperature: float = 1.0
    freeze: bool = True
    ood_reference: str | None = None

    def load(self, device: str) -> Any:
        from ..ood import OODReference
        from ..preprocessing import Preprocessing
        from .predictor import Predictor

        reference = OODReference.load(self.ood_reference) if self.ood_reference else None
        return Predictor.from_file(
            self.path,
            arch=self.arch,
            classes=list(self.classes),
            preprocessing=Preprocessing.from_dict(self.preprocessing),
            device=device,
            temperature=self.temperature,
            freeze=self.freeze,
            ood_reference=reference,
        )


@dataclass
class _Request:
    spec: ModelSpec
    gray: np.ndarray | None  # N x 1 x S x S float32; None: only load the model
    cam_classes: list[str | None] | None
    reply: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=1))

    @property
    def count(self) -> int:
        return 0 if self.gray is None else int(self.gray.shape[0])


class ModelServer:
    """The batching loop (:meth:`run`, in the main thread, the only one that touches the model)
    and one thread per connected worker process (:meth:`serve_connection`)."""

    def __init__(
        self, *, device: str, max_batch: int = 64, wait_s: float = 0.002, cache_size: int = 2
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}.")
        self.device = device
        self.max_batch = max_batch
        self.wait_s = max(0.0, wait_s)
        self.cache_size = max(1, cache_size)
        self.requests: queue.Queue[_Request] = queue.Queue()
        self.models: OrderedDict[str, Any] = OrderedDict()
        self.stats = {"batches": 0, "images": 0, "largest_batch": 0, "requests": 0}
        self.stopping = threading.Event()

    # --- connections (one thread each) ------------------------------------------------------

    def serve_connection(self, conn: Connection) -> None:
        with conn:
            while not self.stopping.is_set():
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    return  # that worker process is gone
                try:
                    conn.send(self._answer(message))
                except (EOFError, OSError, BrokenPipeError):
                    return

    def _answer(self, message: Any) -> dict:
        if not isinstance(message, dict) or message.get("op") not in ("load", "predict", "stats"):
            return {"error": f"unknown request {message!r:.80}", "kind": "protocol"}
        if message["op"] == "stats":
            return {**self.stats, "device": self.device, "pid": os.getpid()}
        request = _Request(
            spec=message["spec"],
            gray=message.get("gray") if message["op"] == "predict" else None,
            cam_classes=message.get("cam_classes"),
        )
        self.requests.put(request)
        return request.reply.get()

    # --- the model loop (main thread) -------------------------------------------------------

    def run(self, parent: int | None = None) -> None:
        while not self.stopping.is_set():
            if parent is not None and os.getppid() != parent:
                log.warning("the worker that started this model server is gone; exiting")
                return
            try:
                first = self.requests.get(timeout=1.0)
            except queue.Empty:
                continue
            self.run_batch(self._gather(first))

    def _gather(self, first: _Request) -> list[_Request]:
        """``first`` and whatever else arrives within ``wait_s``, up to ``max_batch`` images."""
        pending, count = [first], first.count
        deadline = time.monotonic() + self.wait_s
        while count < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                request = (
                    self.requests.get(timeout=remaining)
                    if remaining > 0
                    else self.requests.get_nowait()
                )
            except queue.Empty:
                break
            pending.append(request)
            count += request.count
        return pending

    def run_batch(self, pending: list[_Request]) -> None:
        """Answer every request of ``pending``: model loads first, then one pass per model and
        chunk of up to ``max_batch`` images."""
        by_model: OrderedDict[str, list[_Request]] = OrderedDict()
        for request in pending:
            try:
                self.model(request.spec)
            except Exception as exc:  # noqa: BLE001 - the asking process reports it
                request.reply.put({"error": f"{type(exc).__name__}: {exc}", "kind": "load"})
                continue
            if request.gray is None:
                predictor = self.models[request.spec.key]
                request.reply.put(
                    {"device": str(predictor.device), "execution": predictor.execution}
                )
            else:
                by_model.setdefault(request.spec.key, []).append(request)
        for key, requests in by_model.items():
            chunk: list[_Request] = []
            for request in requests:
                if chunk and sum(r.count for r in chunk) + request.count > self.max_batch:
                    self._forward(key, chunk)
                    chunk = []
                chunk.append(request)
            self._forward(key, chunk)

    def model(self, spec: ModelSpec) -> Any:
        predictor = self.models.get(spec.key)
        if predictor is None:
            started = time.monotonic()
            predictor = spec.load(self.device)
            self.models[spec.key] = predictor
            while len(self.models) > self.cache_size:
                self.models.popitem(last=False)
            log.info(
                "loaded %s (%s) on %s in %.1f s",
                spec.key,
                spec.arch,
                predictor.device,
                time.monotonic() - started,
            )
        self.models.move_to_end(spec.key)
        return predictor

    def _forward(self, key: str, requests: list[_Request]) -> None:
        import torch

        predictor = self.models[key]
        try:
            gray = torch.from_numpy(np.concatenate([r.gray for r in requests]))
            cam_classes: list[str | None] = []
            for r in requests:
                cam_classes += r.cam_classes or [None] * r.count
            raw = predictor.predict_gray(gray, cam_classes)
        except Exception as exc:  # noqa: BLE001 - isolate the request at fault
            if len(requests) > 1:
                log.warning("a batch of %d requests failed (%s); one at a time", len(requests), exc)
                for request in requests:
                    self._forward(key, [request])
                return
            log.exception("a request of %d images failed", requests[0].count)
            requests[0].reply.put({"error": f"{type(exc).__name__}: {exc}", "kind": "forward"})
            return
        self.stats["batches"] += 1
        self.stats["requests"] += len(requests)
        self.stats["images"] += len(cam_classes)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(cam_classes))
        start = 0
        for request in requests:
            request.reply.put(
                {"raw": raw.take(start, start + request.count), "device": str(predictor.device)}
            )
            start += request.count


def _accept_forever(listener: Listener, server: ModelServer) -> None:
    from multiprocessing import AuthenticationError

    while not server.stopping.is_set():
        try:
            conn = listener.accept()
        except AuthenticationError:
            log.warning("refused a connection without the worker's key")
            continue
        except OSError:
            if server.stopping.is_set():
                return
            raise
        threading.Thread(
            target=server.serve_connection, args=(conn,), name="model-client", daemon=True
        ).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--wait-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    parser.add_argument("--cache", type=int, default=2, help="model versions kept loaded")
    parser.add_argument("--parent", type=int, default=None, help="exit when this pid is gone")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s: %(levelname)s/model-server] %(message)s"
    )
    key = os.environ.get(AUTHKEY_ENV, "")
    if len(key) < 32:
        raise SystemExit(f"{AUTHKEY_ENV} must hold the worker's key (hex, 32+ characters).")
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # one input size: pick the fastest kernels once
    server = ModelServer(
        device=args.device,
        max_batch=args.max_batch,
        wait_s=args.wait_ms / 1000.0,
        cache_size=args.cache,
    )
    signal.signal(signal.SIGTERM, lambda *_: server.stopping.set())
    if os.path.exists(args.socket):
        os.unlink(args.socket)  # left by a server that was killed
    listener = Listener(args.socket, family="AF_UNIX", backlog=256, authkey=bytes.fromhex(key))
    os.chmod(args.socket, 0o600)
    threading.Thread(
        target=_accept_forever, args=(listener, server), name="accept", daemon=True
    ).start()
    log.info(
        "model server on %s (pid %d), device %s, batches up to %d, wait %.1f ms",
        args.socket,
        os.getpid(),
        args.device,
        args.max_batch,
        args.wait_ms,
    )
    try:
        server.run(parent=args.parent)
    finally:
        server.stopping.set()
        listener.close()


if __name__ == "__main__":  # pragma: no cover - run as a module by the worker
    try:
        main()
    except MLError as exc:
        raise SystemExit(str(exc)) from None
