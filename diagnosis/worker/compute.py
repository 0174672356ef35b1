"""The model and its forward pass, in a worker process: one Predictor per model version per
process, and a micro-batch's outcomes.

Imports torch: worker side only. Models are loaded lazily in the worker's child process, never
before the prefork pool forks (CUDA cannot be re-initialised in a forked child), and cached by
version id, weights sha256 and calibration number (a new active calibration is a new key, so
the next prediction uses its temperature and OOD reference).
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any

import cv2
import torch
from django.conf import settings
from django.db import DatabaseError

from diagnosis.models import Image, Prediction
from diagnosis.worker import model_servers
from diagnosis.worker.errors import PredictionFailure
from diagnosis.worker.faults import inject_fault
from training.ml.infer.predictor import Predictor
from training.ml.infer.remote import ModelServerUnavailable, RemotePredictor
from training.ml.infer.render import render_pngs
from training.ml.memory import retain_freed_memory
from training.ml.models.checkpoint import file_sha256
from training.ml.ood import OODError, OODReference
from training.ml.preprocessing import Preprocessing
from training.models import ModelVersion

logger = logging.getLogger(__name__)

# A model in this process, or in the worker's model server (diagnosis.worker.model_servers).
AnyPredictor = Predictor | RemotePredictor

# The models this process holds, least recently used first: the production version and the one
# before it, so that predictions still queued for the old version after a promotion do not make
# the two evict each other (each load takes 1-2 s on a CPU).
_cache: OrderedDict[tuple[int, str, int], AnyPredictor] = OrderedDict()
CACHED_MODELS = 2
_lock = threading.Lock()
# Loads in progress: another thread that wants the same version waits for it (one load).
_loading: dict[tuple[int, str, int], threading.Event] = {}


def configure_torch_threads(concurrency: int | None = None) -> int:
    """Pin torch's intra-op threads, and OpenCV's (Grad-CAM's resizing, the PNG encoding), so the
    worker's processes do not fight over the cores: OpenCV would otherwise start a thread per core
    in every pool process."""
    threads = settings.CXR_TORCH_THREADS
    if threads <= 0:
        threads = max(1, (os.cpu_count() or 1) // max(1, concurrency or 1))
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    return threads


def batch_size() -> int:
    """How many predictions a worker runs in one pass (CXR_INFERENCE_BATCH_SIZE; 0 = by device:
    16 where a model server or this process has a GPU, 8 on a CPU)."""
    if settings.CXR_INFERENCE_BATCH_SIZE > 0:
        return settings.CXR_INFERENCE_BATCH_SIZE
    if model_servers.client_address() is not None:
        return 16  # without touching CUDA here: the server has the GPU
    return 16 if torch.cuda.is_available() else 8


def clear_cache() -> None:
    with _lock:
        _cache.clear()


_process_configured = False
# Threads whose torch thread count is pinned: OpenMP keeps that count per calling thread, so the
# thread that loads a model ahead of time (diagnosis.worker.process) and the one that runs tasks
# each pin their own; an unpinned one would start a thread per core in every pool process.
_threads_configured: set[int] = set()


def predictor_for(version: ModelVersion) -> AnyPredictor:
    """The loaded model of ``version``, loaded on first use (1-2 s on a CPU) and then kept.

    A load runs outside the lock: a task on the version already held is not held up while a
    newly promoted one loads (diagnosis.worker.process loads it ahead). A second thread that
    wants the version being loaded waits for that load."""
    global _process_configured
    key = (version.pk, version.sha256, version.calibration_number)
    while True:
        with _lock:
            if threading.get_ident() not in _threads_configured:
                configure_torch_threads(int(os.environ.get("CXR_WORKER_CONCURRENCY", "1") or 1))
                _threads_configured.add(threading.get_ident())
            if not _process_configured:
                if retain_freed_memory(settings.CXR_WORKER_HEAP_RETAIN_MB):
                    logger.info(
                        "keeping up to %d MB of freed memory for reuse",
                        settings.CXR_WORKER_HEAP_RETAIN_MB,
                    )
                _process_configured = True
            predictor = _cache.get(key)
            if predictor is not None:
                _cache.move_to_end(key)
                return predictor
            loading = _loading.get(key)
            if loading is None:
                loading = _loading[key] = threading.Event()
                break
        loading.wait()  # then look again: loaded, or that load failed and this one tries
    try:
        predictor = _load(version)
        with _lock:
            _cache[key] = predictor
            while len(_cache) > CACHED_MODELS:
                _cache.popitem(last=False)
        return predictor
    finally:
        with _lock:
            _loading.pop(key, None)
        loading.set()


def is_loaded(pk: int, sha256: str, calibration_number: int | None = None) -> bool:
    """Whether this process holds that version's model (by its id and weights' sha256), with
    that calibration (any, when None)."""
    with _lock:
        return any(
            key[:2] == (pk, sha256) and calibration_number in (None, key[2]) for key in _cache
        )


def _load(version: ModelVersion) -> AnyPredictor:
    try:
        path = version.weights.path
    except (ValueError, NotImplementedError) as exc:
        raise PredictionFailure(f"Model version {version.name} has no weights file.") from exc
    if not os.path.exists(path):
        raise PredictionFailure(
            f"The weights file of model version {version.name} is missing: {path}. Re-import the "
            "model or restore the file."
        )
    digest = file_sha256(path)
    if digest != version.sha256:
        raise PredictionFailure(
            f"The weights file of model version {version.name} does not match its recorded "
            f"sha256 (expected {version.sha256[:12]}…, found {digest[:12]}…): it was changed or "
            "corrupted. Re-import the model."
        )
    from training.ml.errors import MLError

    reference = _ood_reference(version)
    if model_servers.client_address() is not None:
        return model_servers.remote_predictor(version, path)
    try:
        predictor = Predictor.from_file(
            path,
            arch=version.architecture,
            classes=list(version.class_labels),
            preprocessing=Preprocessing.from_dict(version.preprocessing_dict()),
            temperature=version.temperature or 1.0,
            freeze=settings.CXR_INFERENCE_FREEZE,
            ood_reference=reference,
        )
    except MLError as exc:
        raise PredictionFailure(f"Model version {version.name} cannot be loaded: {exc}") from exc
    logger.info(
        "loaded model version %s (%s) on %s: %s",
        version.name,
        version.architecture,
        predictor.device,
        predictor.execution,
    )
    return predictor


def _ood_reference(version: ModelVersion) -> OODReference | None:
    """The version's OOD reference, read once per loaded model; None when it has none (its
    predictions then carry only the image checks). A reference that is named but cannot be read
    fails the prediction: scoring silently without it would drop the "unlike the training data"
    warning."""
    if not version.ood_reference:
        return None
    try:
        path = version.ood_reference.path
        return OODReference.load(path)
    except (ValueError, NotImplementedError, FileNotFoundError, OODError) as exc:
        raise PredictionFailure(
            f"The out-of-distribution reference of model version {version.name} cannot be read "
            f"({exc}). Restore the file, or fit it again with calibrate."
        ) from exc


def open_display(image: Image, preprocessing):
    """The stored display copy, read for a model with ``preprocessing`` the way training reads
    its images (:func:`training.ml.imaging.decode_upload`'s ``read_long_side``): no smaller than
    the model's :func:`~training.ml.preprocessing.reading_long_side`, also enough for the
    overlay, a JPEG reduced by its decoder, anything larger then by a whole factor."""
    from PIL import Image as PILImage

    from training.ml.preprocessing import jpeg_draft, reading_long_side, reduce_for_reading

    long_side = reading_long_side(preprocessing)
    try:
        with image.display.open("rb") as fh:
            picture: PILImage.Image = PILImage.open(io.BytesIO(fh.read()), formats=["PNG", "JPEG"])
            jpeg_draft(picture, long_side)
            picture.load()
            picture = reduce_for_reading(picture, long_side)
    except FileNotFoundError as exc:
        raise PredictionFailure(
            f"The stored image file is missing ({image.display.name})."
        ) from exc
    return picture


def compute_batch(batch: list[Prediction]) -> list[dict | Exception]:
    """The outcome of each prediction of a micro-batch (one model version): a result dict, or
    the exception that is that prediction's failure. One forward/backward pass for the batch;
    if it raises, each image is run alone so that only the image at fault fails."""
    try:
        predictor = predictor_of(batch[0])
    except DatabaseError:
        raise
    except Exception as exc:  # noqa: BLE001 - PredictionFailure fails them; anything else retries
        if not isinstance(exc, PredictionFailure):
            logger.exception("model version %s could not be loaded", batch[0].model_version_id)
        return [exc] * len(batch)
    outcomes: dict[int, dict | Exception] = {}
    pictures = _open_pictures(batch, predictor, outcomes)
    groups = [list(pictures)] if pictures else []
    while groups:
        indices = groups.pop()
        started = time.perf_counter()
        try:
            inject_fault([batch[i] for i in indices])
            results = predictor.predict([pictures[i] for i in indices])
        except DatabaseError:
            raise
        except ModelServerUnavailable as exc:  # no fault of the images: all back to the queue
            logger.warning("prediction %s: %s", batch[indices[0]].pk, exc)
            outcomes.update(dict.fromkeys(indices, exc))
            continue
        except Exception as exc:  # noqa: BLE001 - the model crashed: isolate the image at fault
            if len(indices) > 1:
                logger.warning(
                    "a micro-batch of %d failed (%s); running its images one at a time",
                    len(indices),
                    exc,
                )
                groups.extend([i] for i in reversed(indices))
                continue
            logger.exception(
                "prediction %s failed (attempt %d)",
                batch[indices[0]].pk,
                batch[indices[0]].attempts,
            )
            outcomes[indices[0]] = exc
            continue
        predict_ms = (time.perf_counter() - started) * 1000.0 / len(indices)
        for i, result in zip(indices, results, strict=True):
            outcomes[i] = _rendered(batch[i], pictures[i], result, predictor, predict_ms)
    return [outcomes[i] for i in range(len(batch))]


def predictor_of(prediction: Prediction) -> AnyPredictor:
    """The loaded model of the version ``prediction`` is for."""
    if prediction.model_version is None:
        raise PredictionFailure("The prediction has no model version to run.")
    return predictor_for(prediction.model_version)


def _open_pictures(
    batch: list[Prediction], predictor: AnyPredictor, outcomes: dict[int, dict | Exception]
) -> dict[int, Any]:
    """Each member's display picture, by index; an unreadable file is that image's failure
    (recorded in ``outcomes``)."""
    pictures = {}
    for i, member in enumerate(batch):
        try:
            pictures[i] = open_display(member.image, predictor.preprocessing)
        except DatabaseError:
            raise
        except Exception as exc:  # noqa: BLE001 - an unreadable file is this image's failure
            outcomes[i] = (
                exc
                if isinstance(exc, PredictionFailure)
                else PredictionFailure(
                    f"The stored image cannot be read: {type(exc).__name__}: {exc}"
                )
            )
    return pictures


# Upload modes that may hold colour; the display copy the model reads is always grey.
_COLOUR_MODES = ("RGB", "RGBA", "YCbCr", "CMYK", "P", "PA", "LAB", "HSV")


def _with_colour_check(ood: dict, image: Image) -> dict:
    """``ood`` with the colour check run on the uploaded original when it may hold colour: the
    model sees a grey copy, in which a colour photograph looks like any grey picture."""
    from PIL import Image as PILImage

    from training.ml.ood import COLOUR_PHOTO, image_checks

    if image.format == Image.Format.DICOM or image.source_mode not in _COLOUR_MODES:
        return ood
    try:
        with image.original.open("rb") as fh:
            original = PILImage.open(io.BytesIO(fh.read()), formats=["PNG", "JPEG"])
            original.draft("RGB", (256, 256))
            original.load()
    except Exception:  # noqa: BLE001 - the check is a bonus; the display copy was readable
        logger.warning("image %s: the original could not be read for the colour check", image.pk)
        return ood
    if COLOUR_PHOTO not in image_checks(original) or COLOUR_PHOTO in ood["reasons"]:
        return ood
    return {**ood, "flagged": True, "reasons": [COLOUR_PHOTO, *ood["reasons"]]}


def _rendered(
    prediction: Prediction, picture: Any, result: Any, predictor: AnyPredictor, predict_ms: float
) -> dict | Exception:
    """One image's result with its heatmap and overlay PNGs, or the rendering's failure."""
    started = time.perf_counter()
    try:
        heatmap_png, overlay_png = render_pngs(picture, result.cam)
    except Exception as exc:  # noqa: BLE001
        logger.exception("prediction %s: rendering failed", prediction.pk)
        return exc
    return {
        "probabilities": {k: float(v) for k, v in result.probabilities.items()},
        "label": result.label,
        "cam_class": result.cam_class,
        "heatmap": heatmap_png,
        "overlay": overlay_png,
        "device": str(predictor.device),
        # {"score", "threshold", "flagged", "reasons"} (training.ml.ood.OODResult).
        "ood": _with_colour_check(result.ood.to_dict(), prediction.image),
        # This image's share of the batch's pass, plus its own rendering.
        "compute_ms": predict_ms + (time.perf_counter() - started) * 1000.0,
    }
