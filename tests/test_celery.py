"""The Celery app (cxrweb/celery.py) and the tasks it registers agree with the settings and with
the names the dispatch modules send."""

from __future__ import annotations

import pytest
from django.conf import settings

from diagnosis import dispatch as diagnosis_dispatch
from training import dispatch as training_dispatch


@pytest.fixture(scope="module")
def app():
    from cxrweb.celery import app

    app.loader.import_default_modules()  # what a worker does at start: autodiscover the tasks
    return app


def _own_tasks(app) -> dict:
    return {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}


@pytest.mark.parametrize("name", diagnosis_dispatch.TASK_NAMES + training_dispatch.TASK_NAMES)
def test_every_name_dispatch_sends_is_a_registered_task(app, name):
    assert name in app.tasks


def test_every_registered_task_is_named_in_a_dispatch_module(app):
    named = set(diagnosis_dispatch.TASK_NAMES + training_dispatch.TASK_NAMES)
    assert set(_own_tasks(app)) == named


def test_a_task_that_outlasts_the_visibility_timeout_is_acknowledged_early(app):
    """With late acknowledgement (CELERY_TASK_ACKS_LATE), Redis hands an unacknowledged message
    out again after the visibility timeout: a task that may run longer than that must
    acknowledge early, or a second worker starts it while the first still runs it."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    long_running = []
    for name, task in _own_tasks(app).items():
        limit = task.time_limit or app.conf.task_time_limit
        assert limit, f"{name} runs without a time limit"
        if limit > visibility:
            long_running.append(name)
            assert task.acks_late is False, (
                f"{name} may run {limit} s, beyond the visibility timeout ({visibility} s), "
                "and is acknowledged late: set acks_late=False on it"
            )
    assert training_dispatch.RUN_TRAINING in long_running  # the check above is not vacuous


def test_the_web_side_sends_tasks_without_importing_torch():
    """The web process loads the dispatch modules and, through autodiscovery, the tasks modules:
    none of them may import torch (the worker modules do, when a task runs)."""
    from tests.conftest import run_python

    done = run_python(
        "import sys, django; django.setup()\n"
        "from cxrweb.celery import app\n"
        "app.loader.import_default_modules()\n"
        "import diagnosis.dispatch, diagnosis.services, training.dispatch, training.services\n"
        "assert 'diagnosis.tasks' in sys.modules and 'training.tasks' in sys.modules\n"
        "print('torch' in sys.modules)\n",
        env={"DJANGO_SETTINGS_MODULE": "cxrweb.settings"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
