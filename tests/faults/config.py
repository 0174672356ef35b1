"""The fault stack's configuration: short timings, the model's classes, the children's env."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

CLASSES = ["normal", "pneumonia"]
BASE_WORKERS = 2

# Small timings, so that the scenarios finish in seconds (see cxrweb/settings.py).
TIMINGS = {
    "CXR_PREDICTION_STALE_AFTER_S": 20,
    "CXR_RECONCILE_QUEUED_AFTER_S": 10,
    "CXR_RECONCILE_EVERY_S": 3,
    "CXR_RETRY_DELAY_S": 0.5,
    "CXR_TASK_TIME_LIMIT": 60,  # the broker's visibility timeout is 3x: 180 s
    "CXR_PREDICTION_MAX_ATTEMPTS": 3,
    "CXR_PREDICTION_MAX_DISPATCHES": 5,
    "CXR_INFERENCE_BATCH_SIZE": 8,  # the CPU default, explicit: the scenarios count on batches
    "CXR_WORKER_WARM_POLL_S": 1,
    # Not niced: on a machine loaded by other work, a niced worker waits minutes for the CPU
    # (to import torch, to start a task) and misses the reconciler's messages, which expire
    # after CXR_RECONCILE_EVERY_S. The scenarios are about faults, not about priorities.
    "CXR_WORKER_NICE": 0,
}


def child_env(*, tmp: Path, media: Path, database_url: str, broker_url: str) -> dict[str, str]:
    """The environment of every app process: this one's, less anything that configures the app,
    plus the stack's own database, broker, directories and TIMINGS."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CXR_", "CELERY_", "DJANGO_", "PYTEST_"))
        and k
        not in (
            "DATABASE_URL",
            "SECRET_KEY",
            "DEBUG",
            "ALLOWED_HOSTS",
            "MEDIA_ROOT",
            "STATIC_ROOT",
            "LOG_LEVEL",
        )
    }
    env.update(
        {
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": database_url,
            # The app's processes go through the unix socket, as under `make run` (a lost broker
            # takes a different path in kombu there); the tests look through TCP.
            "CELERY_BROKER_URL": broker_url,
            "MEDIA_ROOT": str(media),
            "CXR_VAR_DIR": str(tmp / "var"),
            "STATIC_ROOT": str(tmp / "static"),
            "CXR_FAULT_INJECTION": "true",
            "CXR_TORCH_THREADS": "1",
            "LOG_LEVEL": "INFO",
            "DJANGO_SETTINGS_MODULE": "cxrweb.settings",
            "PYTHONUNBUFFERED": "1",
            **{k: str(v) for k, v in TIMINGS.items()},
        }
    )
    return env
