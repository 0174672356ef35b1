"""The worker process's own setup: Celery signal handlers for an inference worker's main
process (before the pool forks) and each pool process (warming the production model).

Connected by importing this module (diagnosis.tasks does, so every worker has them). It must not
import torch at import time: the ML libraries are loaded by the handlers, when they run.
"""

from __future__ import annotations

import logging
import os

from celery.signals import celeryd_init, worker_process_init, worker_shutdown
from django.db import DatabaseError


@celeryd_init.connect
def _configure_worker(sender=None, instance=None, conf=None, options=None, **kwargs) -> None:
    """In the worker's main process, before the pool forks (the children inherit both):

    - record how many pool processes share this host's cores, so each child pins torch to its
      share (app.conf.worker_concurrency is None when --concurrency comes from the command line);
    - lower the worker's CPU priority (CXR_WORKER_NICE), so the web server sharing the host
      answers uploads first and the workers take the rest of the CPU;
    - import the ML libraries once, here (CXR_WORKER_PRELOAD_ML): see _preload_ml;
    - when it consumes the inference queue, have each pool process load the production model as
      soon as it is up (CXR_WORKER_WARM_MODEL): see _warm_production_model;
    - and on a GPU host, start one model server per GPU (CXR_MODEL_SERVER): see
      diagnosis.worker.model_servers.
    """
    global _warm_in_pool
    from django.conf import settings

    log = logging.getLogger(__name__)
    concurrency = (options or {}).get("concurrency") or os.cpu_count() or 1
    os.environ.setdefault("CXR_WORKER_CONCURRENCY", str(concurrency))
    log.info("pool processes on this worker: %s", concurrency)
    if settings.CXR_WORKER_NICE:
        try:
            log.info("worker CPU priority: nice %d", os.nice(settings.CXR_WORKER_NICE))
        except OSError as exc:
            log.warning("could not lower the worker's CPU priority: %s", exc)
        _nice_own_autogroup(settings.CXR_WORKER_NICE, log)
    if settings.CXR_WORKER_PRELOAD_ML:
        _preload_ml(log)
    queues = (options or {}).get("queues") or settings.CELERY_TASK_DEFAULT_QUEUE
    if isinstance(queues, str):
        queues = queues.split(",")
    _warm_in_pool = settings.CXR_WORKER_WARM_MODEL and "inference" in queues
    if "inference" in queues:
        from diagnosis.worker import model_servers

        model_servers.start_for_worker(log)


@worker_shutdown.connect
def _stop_model_servers(**kwargs) -> None:
    """The worker's model servers (if it runs any) stop with it."""
    from diagnosis.worker import model_servers

    model_servers.stop_for_worker()


_warm_in_pool = False  # set in the main process before the fork; the pool processes inherit it


@worker_process_init.connect
def _warm_production_model(**kwargs) -> None:
    """In each new pool process of an inference worker: load the production model in a
    background thread, so that the first prediction after a start, a restart or a replaced child
    does not wait for it (~1-2 s on a CPU: the weights, the checks, the frozen graph). A thread,
    because a pool process must report that it is up at once (Celery kills one that does not,
    CXR_WORKER_PROC_ALIVE_TIMEOUT). A task that comes first waits for the same load, as it
    would have without this. The thread then looks for a newly promoted version every
    CXR_WORKER_WARM_POLL_S and loads it too, so the first prediction after a promotion does not
    wait either (the previous version stays loaded beside it, for what is still queued)."""
    if _warm_in_pool:
        import threading

        threading.Thread(
            target=_keep_production_model_loaded, name="warm-model", daemon=True
        ).start()


def _keep_production_model_loaded() -> None:
    import time

    from django.conf import settings

    _load_production_model(first=True)
    while settings.CXR_WORKER_WARM_POLL_S > 0:
        time.sleep(settings.CXR_WORKER_WARM_POLL_S)
        _load_production_model(first=False)


_not_loadable: tuple[int, str, int] | None = None  # the version this thread failed to load, if any


def _load_production_model(*, first: bool) -> None:
    """Load the production version unless this process holds it already (one small query).

    A version that fails to load is not tried again by this thread (nor logged every poll); the
    first task on it reports why, as it would without this."""
    global _not_loadable
    from django.db import connections

    log = logging.getLogger(__name__)
    try:
        from diagnosis.worker import compute  # imports torch: worker side only
        from training.models import ModelVersion

        production = (
            ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION)
            .values_list("pk", "sha256", "calibration_number")
            .first()
        )
        if (
            production is not None
            and production != _not_loadable
            and not compute.is_loaded(*production)
        ):
            version = ModelVersion.objects.defer("metrics").get(pk=production[0])
            try:
                compute.predictor_for(version)
            except DatabaseError:
                raise
            except Exception:
                _not_loadable = production  # its file: missing, changed, unreadable
                raise
            log.info(
                "production model %s loaded ahead of the %s",
                version.name,
                "first task" if first else "first prediction since its promotion",
            )
    except Exception:  # noqa: BLE001 - it loads on first use instead, and reports what fails there
        log.warning(
            "could not load the production model ahead of its first task; it loads on first use",
            exc_info=True,
        )
    finally:
        connections.close_all()  # this thread's own connection


def _preload_ml(log: logging.Logger) -> None:
    """Import torch, torchvision, OpenCV and pytorch-grad-cam before the pool forks.

    The pool processes then share these libraries' pages with the main process instead of each
    relocating its own copy (about 330 MB less private memory per pool process with the CUDA
    build of torch), and a pool process that replaces a dead one starts without importing them
    again. Nothing runs on them here: no CUDA context and no thread pool exist to be inherited
    (the models are still loaded in the children, on first use).
    """
    import time

    started = time.monotonic()
    try:
        import torch

        import training.ml.infer.predictor  # noqa: F401 - torchvision, pytorch-grad-cam, OpenCV
    except Exception:  # noqa: BLE001 - the children import them again, and report what fails
        log.warning(
            "could not preload the ML libraries in the worker's main process", exc_info=True
        )
        return
    if torch.cuda.is_initialized():  # would not survive the fork; never expected from imports
        log.warning("CUDA was initialised while preloading; pool processes may fail to use it")
    log.info("ML libraries preloaded before the pool starts (%.1f s)", time.monotonic() - started)


def _nice_own_autogroup(nice: int, log: logging.Logger) -> None:
    """Give the worker's autogroup the same nice, when the worker leads its own session.

    With the kernel's autogroup scheduling (sched_autogroup_enabled, the default on most
    distributions) each session is one scheduling group, and a nice value only weighs against
    processes of the same session: a worker started in its own session (setsid, a service
    manager, its own terminal) would take half the cores from the web server whatever its nice.
    The group's nice is set only when the worker is the session's leader, so that the group holds
    the worker and its pool alone, never the web server or the shell that started both.
    """
    path = "/proc/self/autogroup"
    if not os.path.exists(path) or os.getsid(0) != os.getpid():
        return
    try:
        with open(path, "w") as fh:
            fh.write(str(nice))
        with open(path) as fh:
            log.info("worker's scheduling group (own session): %s", fh.read().strip())
    except OSError as exc:
        log.warning("could not lower the worker's scheduling group's priority: %s", exc)
