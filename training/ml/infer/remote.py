"""The worker process's side of a model server (:mod:`training.ml.infer.server`): a predictor
whose model runs in that server, with :class:`~training.ml.infer.predictor.Predictor`'s
``predict``.

Each image is read and resized here, on the CPU (:func:`~training.ml.preprocessing.to_gray_input`),
and the image checks run here too; the server runs the model on what several processes sent,
and the heatmap PNGs are rendered here again from the CAMs it returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Client, Connection
from typing import Any

from PIL import Image

from ..errors import MLError
from ..ood import image_checks
from ..preprocessing import Preprocessing, batch_gray_input
from .predictor import PredictionResult, checked_cam_classes
from .server import ModelSpec

__all__ = ["ModelServerClient", "ModelServerError", "ModelServerUnavailable", "RemotePredictor"]

log = logging.getLogger(__name__)


class ModelServerError(MLError):
    """The server could not load the model or run it on these images."""


class ModelServerUnavailable(MLError):
    """No model server answered (it is restarting, or down): nothing is wrong with the images."""


class ModelServerClient:
    """One connection per process to one server, shared by its threads (one request at a time).

    A lost connection (the server was restarted) is made again, waiting up to
    ``connect_timeout`` seconds for the server to come back; a request that was in flight is sent
    once more on the new connection."""

    def __init__(self, address: str, authkey: bytes, *, connect_timeout: float = 60.0) -> None:
        self.address = address
        self.authkey = authkey
        self.connect_timeout = connect_timeout
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def call(self, message: dict) -> dict:
        with self._lock:
            for attempt in (1, 2):
                conn = self._connected()
                try:
                    conn.send(message)
                    reply = conn.recv()
                    break
                except (EOFError, OSError) as exc:
                    self.close()
                    if attempt == 2:
                        raise ModelServerUnavailable(
                            f"The model server at {self.address} stopped while it ran this "
                            f"request, twice ({type(exc).__name__}); the worker restarts it."
                        ) from exc
                    log.warning("lost the model server (%s); connecting again", exc)
        if "error" in reply:
            raise ModelServerError(reply["error"])
        return reply

    def _connected(self) -> Connection:
        if self._conn is not None:
            return self._conn
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                self._conn = Client(self.address, family="AF_UNIX", authkey=self.authkey)
                return self._conn
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if time.monotonic() > deadline:
                    raise ModelServerUnavailable(
                        f"No model server answers at {self.address} after "
                        f"{self.connect_timeout:.0f} s ({exc}); is the worker's server running?"
                    ) from exc
                time.sleep(0.2)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None


class RemotePredictor:
    """A :class:`~training.ml.infer.predictor.Predictor` stand-in whose model runs in a model
    server: same ``classes``, ``preprocessing``, ``device`` (the server's) and ``predict``."""

    def __init__(self, client: ModelServerClient, spec: ModelSpec) -> None:
        self.client = client
        self.spec = spec
        self.arch = spec.arch
        self.classes = list(spec.classes)
        self.preprocessing = Preprocessing.from_dict(spec.preprocessing)
        self.device = "unknown"
        self.execution = "unknown"

    def load(self) -> RemotePredictor:
        """Have the server load the model now (its errors are this version's load errors)."""
        reply = self.client.call({"op": "load", "spec": self.spec})
        self.device = reply["device"]
        self.execution = f"{reply['execution']}, in the model server at {self.client.address}"
        return self

    def predict(
        self,
        images: Sequence[Image.Image],
        *,
        cam_classes: Sequence[str | None] | None = None,
    ) -> list[PredictionResult]:
        images = list(images)
        if not images:
            return []
        if cam_classes is not None:  # refused here, as in-process: ValueError, not a server error
            cam_classes = checked_cam_classes(self.classes, cam_classes, len(images))
        checks = [image_checks(image) for image in images]
        gray = batch_gray_input(images, self.preprocessing).numpy()
        reply: dict[str, Any] = self.client.call(
            {
                "op": "predict",
                "spec": self.spec,
                "gray": gray,
                "cam_classes": cam_classes,
            }
        )
        self.device = reply["device"]
        return reply["raw"].results(checks)
