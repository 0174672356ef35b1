"""The Celery app. Workers: `celery -A cxrweb worker -Q inference` (and `-Q training`)."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxrweb.settings")

app = Celery("cxrweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _recycle_database_connections(**kwargs) -> None:
    """Database connections in tasks as Django treats them in requests.

    Celery's Django fix-up closes every connection before and after each task, so a worker would
    open a new PostgreSQL connection per task (a few ms of CPU each, on both sides). With
    CELERY_DB_REUSE_MAX set it keeps them; this closes the ones that are unusable (an error
    happened: e.g. the database restarted) or older than CONN_MAX_AGE, and re-arms
    CONN_HEALTH_CHECKS, exactly what Django does at the start and end of a request.
    """
    from django.db import close_old_connections

    close_old_connections()
