"""Survival: the reconciler, bounded retries of a crashing image, taking over a dead claim."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys

import pytest
from django.utils import timezone

from diagnosis import services
from diagnosis.dispatch import RUN_PREDICTION, predictions_reconcile
from diagnosis.models import Prediction
from diagnosis.worker.run import prediction_run
from tests import imagegen


@pytest.fixture
def sent(sent_tasks):
    """(id, countdown) of each prediction sent to the workers, each send checked to be the
    prediction task with no options but a countdown or a priority."""

    def calls() -> list[tuple[int, float | None]]:
        assert all(t.name == RUN_PREDICTION and len(t.args) == 1 for t in sent_tasks)
        assert all(set(t.options) <= {"countdown", "priority"} for t in sent_tasks)
        return [(t.args[0], t.options.get("countdown")) for t in sent_tasks]

    return calls


@pytest.fixture
def queued(radiologist, production_model):
    return services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="REC-1", filename="chest.png"
    ).prediction


def _age(prediction, **fields):
    Prediction.objects.filter(pk=prediction.pk).update(**fields)


def test_a_lost_queued_prediction_is_sent_again_then_failed_after_the_limit(queued, sent, settings):
    long_ago = timezone.now() - dt.timedelta(seconds=settings.CXR_RECONCILE_QUEUED_AFTER_S + 1)
    _age(queued, last_dispatched_at=long_ago, dispatches=1)
    assert predictions_reconcile() == {"redispatched": 1, "failed": 0}
    assert sent() == [(queued.pk, None)]
    row = Prediction.objects.get(pk=queued.pk)
    assert row.dispatches == 2 and row.last_dispatched_at > long_ago
    assert predictions_reconcile() == {"redispatched": 0, "failed": 0}  # not yet due
    _age(queued, last_dispatched_at=long_ago, dispatches=settings.CXR_PREDICTION_MAX_DISPATCHES)
    assert predictions_reconcile() == {"redispatched": 0, "failed": 1}
    row.refresh_from_db()
    assert row.status == "failed" and "workers running" in row.error


def test_a_waiting_prediction_is_not_touched_by_the_reconciler(radiologist, sent, settings):
    waiting = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="REC-W"
    ).prediction
    long_ago = timezone.now() - dt.timedelta(days=1)
    _age(waiting, queued_at=long_ago)
    assert predictions_reconcile() == {"redispatched": 0, "failed": 0}
    assert sent() == []


def test_a_stale_running_prediction_is_sent_again_and_completes_once(queued, sent, settings):
    stale = timezone.now() - dt.timedelta(seconds=settings.CXR_PREDICTION_STALE_AFTER_S + 1)
    _age(queued, status="running", started_at=stale, attempts=1, worker="other-host:1")
    assert predictions_reconcile()["redispatched"] == 1
    done = prediction_run(prediction_id=queued.pk)
    assert done.status == "done" and done.attempts == 2
    assert prediction_run(prediction_id=queued.pk) is None


def test_a_claim_held_by_a_dead_process_on_this_host_is_taken_over_at_once(queued):
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = f"{socket.gethostname()}:{proc.stdout.strip()}"
    _age(queued, status="running", started_at=timezone.now(), attempts=1, worker=dead)
    done = prediction_run(prediction_id=queued.pk)
    assert done is not None and done.status == "done"
    assert done.attempts == 2


def test_a_claim_held_by_a_live_process_is_left_alone(queued):
    import os

    live = f"{socket.gethostname()}:{os.getppid()}"  # another process, alive: our parent
    _age(queued, status="running", started_at=timezone.now(), attempts=1, worker=live)
    assert prediction_run(prediction_id=queued.pk) is None


def test_an_image_that_crashes_the_model_is_retried_then_failed_without_blocking(
    radiologist, production_model, sent, settings
):
    settings.CXR_FAULT_INJECTION = True
    poison = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="P", filename="poison.png"
    ).prediction
    good = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="G", filename="good.png"
    ).prediction
    for attempt in range(1, settings.CXR_PREDICTION_MAX_ATTEMPTS):
        again = prediction_run(prediction_id=poison.pk)
        assert again.status == "queued" and "crashed" in again.error
        assert again.attempts == attempt
    prediction_run(prediction_id=good.pk)  # (or done already, in the poison's batch)
    assert Prediction.objects.get(pk=good.pk).status == "done"  # not blocked
    failed = prediction_run(prediction_id=poison.pk)
    assert failed.status == "failed"
    assert f"Failed {settings.CXR_PREDICTION_MAX_ATTEMPTS} times" in failed.error
    assert "injected fault" in failed.error


def test_the_reconcile_command_reports_what_it_did(queued, sent, settings, capsys):
    from django.core.management import call_command

    _age(queued, last_dispatched_at=timezone.now() - dt.timedelta(days=1))
    call_command("reconcile_predictions")
    out = capsys.readouterr().out
    assert "re-sent 1, failed 0" in out
    assert "PACS exports made 0, re-sent 0; webhooks re-sent 0" in out  # the periodic task's reach


def test_a_claim_beyond_the_limit_whose_process_died_is_not_counted_as_an_attempt(
    queued, sent, settings
):
    """Such a claim only marks the row failed; if its process died first, the reconciler does."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = f"{socket.gethostname()}:{proc.stdout.strip()}"
    limit = settings.CXR_PREDICTION_MAX_ATTEMPTS
    _age(queued, status="running", started_at=timezone.now(), attempts=limit + 1, worker=dead)
    assert predictions_reconcile() == {"redispatched": 0, "failed": 1}
    row = Prediction.objects.get(pk=queued.pk)
    assert row.status == "failed" and f"Gave up after {limit} attempts" in row.error


def test_a_send_the_broker_refused_is_uncounted_and_due_at_the_next_reconcile(
    radiologist, production_model, monkeypatch, django_capture_on_commit_callbacks, sent
):
    from kombu.exceptions import OperationalError

    from cxrweb.celery import app

    recording = app.send_task  # the sent_tasks stand-in

    def refused(name, args=None, kwargs=None, **options):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(app, "send_task", refused)
    with django_capture_on_commit_callbacks(execute=True):  # robust: the upload stands
        result = services.study_upload(
            uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="REC-DOWN"
        )
    row = Prediction.objects.get(pk=result.prediction.pk)
    assert (row.status, row.dispatches) == ("queued", 0)  # the failed send does not count
    monkeypatch.setattr(app, "send_task", recording)
    # Due at once, not after the deadline for messages lost after they were taken.
    assert predictions_reconcile() == {"redispatched": 1, "failed": 0}
    assert sent() == [(row.pk, None)]
    row.refresh_from_db()
    assert row.dispatches == 1
