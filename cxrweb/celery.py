"""The Celery app. Workers: `celery -A cxrweb worker -Q inference` (and `-Q training`)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxrweb.settings")

app = Celery("cxrweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
