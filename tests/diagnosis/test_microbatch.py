"""Micro-batching in the worker: one forward/backward pass for the predictions already waiting."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from diagnosis import services
from diagnosis.dispatch import RUN_PREDICTION
from diagnosis.models import Prediction, Study
from diagnosis.worker import claim, finish
from diagnosis.worker.run import prediction_run
from tests import imagegen


def _upload(user, seed: int, *, filename: str = "chest.png", priority=Study.Priority.ROUTINE):
    return services.study_upload(
        uploaded_by=user,
        data=imagegen.png_bytes(seed=seed),
        patient_id=f"MB-{seed}",
        filename=filename,
        priority=priority,
    ).prediction


@pytest.fixture
def sent(sent_tasks, settings):
    """The ids of the predictions sent to the workers; each send checked: the prediction task,
    and no countdown but the retry delay (a crashed image goes back behind what is waiting)."""

    def ids() -> list[int]:
        assert all(t.name == RUN_PREDICTION and len(t.args) == 1 for t in sent_tasks)
        assert all(
            t.options.get("countdown") in (None, settings.CXR_RETRY_DELAY_S) for t in sent_tasks
        )
        return [t.args[0] for t in sent_tasks]

    return ids


def test_one_task_analyses_what_is_waiting_and_the_other_tasks_then_do_nothing(
    radiologist, production_model, settings
):
    settings.CXR_INFERENCE_BATCH_SIZE = 4
    waiting = [_upload(radiologist, seed) for seed in range(3)]
    done = prediction_run(prediction_id=waiting[0].pk, worker="w1")
    assert done.pk == waiting[0].pk and done.status == "done"
    rows = list(Prediction.objects.filter(pk__in=[p.pk for p in waiting]).order_by("pk"))
    assert [r.status for r in rows] == ["done"] * 3
    assert all(r.attempts == 1 and r.worker == "w1" for r in rows)
    assert all(r.heatmap and r.overlay and r.compute_ms > 0 for r in rows)
    assert all(sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-5) for r in rows)
    # Their own messages arrive later: nothing to do, nothing changed.
    for row in rows[1:]:
        assert prediction_run(prediction_id=row.pk, worker="w2") is None
        again = Prediction.objects.get(pk=row.pk)
        assert (again.worker, again.attempts, again.finished_at) == ("w1", 1, row.finished_at)


def test_a_batch_gives_each_image_the_result_it_gets_alone(radiologist, production_model, settings):
    settings.CXR_INFERENCE_BATCH_SIZE = 2
    first, second = _upload(radiologist, 1), _upload(radiologist, 2)
    prediction_run(prediction_id=first.pk)
    batched = Prediction.objects.get(pk=second.pk)
    assert batched.status == "done"
    settings.CXR_INFERENCE_BATCH_SIZE = 1
    same_bytes = services.study_upload(
        uploaded_by=radiologist,
        data=imagegen.png_bytes(seed=2),
        patient_id="MB-again",
    ).prediction
    alone = prediction_run(prediction_id=same_bytes.pk)
    assert alone.label == batched.label
    for name, p in alone.probabilities.items():
        assert p == pytest.approx(batched.probabilities[name], abs=1e-4)


def test_the_batch_size_is_a_limit_and_the_most_urgent_study_goes_first(
    radiologist, production_model, settings
):
    settings.CXR_INFERENCE_BATCH_SIZE = 2
    first = _upload(radiologist, 10)
    routine = _upload(radiologist, 11)
    stat = _upload(radiologist, 12, priority=Study.Priority.STAT)
    prediction_run(prediction_id=first.pk)
    status = dict(Prediction.objects.values_list("pk", "status"))
    assert status == {first.pk: "done", stat.pk: "done", routine.pk: "queued"}


def test_batching_off_runs_one_prediction_per_task(radiologist, production_model, settings):
    settings.CXR_INFERENCE_BATCH_SIZE = 1
    first, other = _upload(radiologist, 20), _upload(radiologist, 21)
    prediction_run(prediction_id=first.pk)
    assert Prediction.objects.get(pk=other.pk).status == "queued"


def test_a_prediction_that_was_already_attempted_runs_alone_and_is_not_batched(
    radiologist, production_model, settings
):
    """It may be the image that killed its worker: it must not take others down with it."""
    settings.CXR_INFERENCE_BATCH_SIZE = 4
    retried, fresh = _upload(radiologist, 30), _upload(radiologist, 31)
    Prediction.objects.filter(pk=retried.pk).update(attempts=1)
    done = prediction_run(prediction_id=retried.pk)
    assert done.status == "done" and done.attempts == 2
    assert Prediction.objects.get(pk=fresh.pk).status == "queued"
    # ...and a fresh one does not pick it up as a companion either.
    Prediction.objects.filter(pk=retried.pk).update(status="queued", attempts=1)
    prediction_run(prediction_id=fresh.pk)
    assert Prediction.objects.get(pk=retried.pk).status == "queued"


def test_an_image_that_crashes_the_batch_fails_alone(
    radiologist, production_model, settings, sent, django_capture_on_commit_callbacks
):
    settings.CXR_INFERENCE_BATCH_SIZE = 4
    settings.CXR_FAULT_INJECTION = True
    good = _upload(radiologist, 40, filename="good.png")
    poison = _upload(radiologist, 41, filename="poison.png")
    other = _upload(radiologist, 42, filename="other.png")
    with django_capture_on_commit_callbacks(execute=True):
        done = prediction_run(prediction_id=good.pk)
    assert done.status == "done"
    assert Prediction.objects.get(pk=other.pk).status == "done"
    crashed = Prediction.objects.get(pk=poison.pk)
    assert crashed.status == "queued" and "injected fault" in crashed.error
    assert crashed.attempts == 1
    assert sent() == [poison.pk]  # back in the queue, behind what is waiting


def test_a_database_error_mid_batch_stores_none_of_it_and_puts_the_companions_back(
    radiologist, production_model, settings, sent, monkeypatch
):
    """The batch's outcomes are stored in one transaction: an error while storing the second
    keeps none of them (and no file of the first on disk); the companions go back to the queue,
    and the task's retry (same process) takes its own claim back and finishes them all."""
    settings.CXR_INFERENCE_BATCH_SIZE = 3
    first, second, third = (_upload(radiologist, seed) for seed in (50, 51, 52))
    real_finish = finish.prediction_finish
    calls = []

    def finish_then_lose_the_database(prediction, outcome, **kwargs):
        calls.append(prediction.pk)
        if len(calls) == 2:
            raise OperationalError("server closed the connection unexpectedly")
        return real_finish(prediction, outcome, **kwargs)

    monkeypatch.setattr(finish, "prediction_finish", finish_then_lose_the_database)
    with pytest.raises(OperationalError):
        prediction_run(prediction_id=first.pk, worker="w1")
    assert calls == [first.pk, second.pk]
    rows = {r.pk: r for r in Prediction.objects.all()}
    assert (rows[first.pk].status, rows[first.pk].worker, rows[first.pk].attempts) == (
        "running",
        "w1",
        1,
    )
    assert not rows[first.pk].heatmap and not rows[first.pk].overlay
    heatmaps = settings.MEDIA_ROOT / "heatmaps"
    assert not heatmaps.exists() or not any(p.is_file() for p in heatmaps.rglob("*"))
    for pk in (second.pk, third.pk):
        assert (rows[pk].status, rows[pk].attempts) == ("queued", 0)
    assert sorted(sent()) == sorted([second.pk, third.pk])
    # The task's retry (same process) takes its own claim back; it was attempted, so it runs
    # alone. The companions' messages, sent again, run them as a batch of two.
    monkeypatch.setattr(finish, "prediction_finish", real_finish)
    again = prediction_run(prediction_id=first.pk, worker="w1")
    assert again.status == "done" and again.attempts == 2
    assert prediction_run(prediction_id=second.pk, worker="w1").status == "done"
    assert Prediction.objects.get(pk=third.pk).attempts == 1
    assert set(Prediction.objects.values_list("status", flat=True)) == {"done"}


def test_a_full_disk_mid_batch_leaves_no_file_and_retries_the_whole_batch_at_once(
    radiologist,
    production_model,
    settings,
    sent,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    """Not only database errors: a file that cannot be written (disk full) while the batch is
    stored keeps none of it, removes the files already written, and puts every prediction of
    the batch back in the queue with the error at once (none is left running)."""
    from django.core.files.storage import default_storage

    settings.CXR_INFERENCE_BATCH_SIZE = 3
    first, second, third = (_upload(radiologist, seed) for seed in (55, 56, 57))
    real_save = default_storage.save
    saves = []

    def save_until_the_disk_is_full(name, content, **kwargs):
        saves.append(name)
        if len(saves) == 3:  # the second prediction's first file
            raise OSError(28, "No space left on device")
        return real_save(name, content, **kwargs)

    monkeypatch.setattr(default_storage, "save", save_until_the_disk_is_full)
    with django_capture_on_commit_callbacks(execute=True):
        own = prediction_run(prediction_id=first.pk, worker="w1")
    assert own.status == "queued" and "No space left on device" in own.error
    heatmaps = settings.MEDIA_ROOT / "heatmaps"
    assert not heatmaps.exists() or not any(p.is_file() for p in heatmaps.rglob("*"))
    rows = {r.pk: r for r in Prediction.objects.all()}
    assert not rows[first.pk].overlay
    for pk in (first.pk, second.pk, third.pk):
        assert (rows[pk].status, rows[pk].attempts) == ("queued", 1)
        assert "could not be stored" in rows[pk].error
    assert sorted(sent()) == sorted([first.pk, second.pk, third.pk])


def test_a_batch_is_stored_with_one_commit(radiologist, production_model, settings, monkeypatch):
    """One transaction for the batch's results: not one commit (and WAL flush) per image."""
    from django.db import connection

    settings.CXR_INFERENCE_BATCH_SIZE = 4
    waiting = [_upload(radiologist, seed) for seed in range(90, 94)]
    blocks = []
    real_finish = finish.prediction_finish

    def finish_in_block(prediction, outcome, **kwargs):
        blocks.append(tuple(connection.savepoint_ids))
        return real_finish(prediction, outcome, **kwargs)

    monkeypatch.setattr(finish, "prediction_finish", finish_in_block)
    outside = tuple(connection.savepoint_ids)  # the test's own transaction
    prediction_run(prediction_id=waiting[0].pk, worker="w1")
    assert len(blocks) == 4 and len(set(blocks)) == 1  # all four inside the same atomic block
    assert len(blocks[0]) == len(outside) + 1 and blocks[0][: len(outside)] == outside
    assert set(Prediction.objects.values_list("status", flat=True)) == {"done"}


def test_the_same_process_takes_back_its_own_claim_after_an_error(radiologist, production_model):
    """A retry of a task whose attempt stopped on a database error finds its own claim."""
    queued = _upload(radiologist, 60)
    Prediction.objects.filter(pk=queued.pk).update(status="running", worker="host:1", attempts=1)
    done = prediction_run(prediction_id=queued.pk, worker="host:1")
    assert done is not None and done.status == "done" and done.attempts == 2


def test_the_default_batch_size_suits_the_device(settings):
    import torch

    from diagnosis.worker import compute

    settings.CXR_INFERENCE_BATCH_SIZE = 0
    assert compute.batch_size() == (16 if torch.cuda.is_available() else 8)
    settings.CXR_INFERENCE_BATCH_SIZE = 5
    assert compute.batch_size() == 5


def test_a_model_that_fails_to_load_puts_the_whole_batch_back_in_the_queue(
    radiologist, production_model, settings, monkeypatch
):
    """Not only a missing or corrupt file: any loading error (e.g. out of memory) is retried."""
    from diagnosis.worker import compute

    settings.CXR_INFERENCE_BATCH_SIZE = 2
    first, second = _upload(radiologist, 70), _upload(radiologist, 71)

    def out_of_memory(version):
        raise MemoryError("cannot allocate the model")

    monkeypatch.setattr(compute, "predictor_for", out_of_memory)
    again = prediction_run(prediction_id=first.pk)
    assert again.status == "queued" and "MemoryError" in again.error
    assert Prediction.objects.get(pk=second.pk).status == "queued"


def test_companions_are_claimed_in_one_update_and_read_back_in_one_query(
    radiologist, production_model, django_assert_num_queries
):
    """Most urgent, then oldest; never a row another worker holds; whatever the batch size, an
    UPDATE and a SELECT."""
    waiting = [_upload(radiologist, seed) for seed in range(80, 86)]
    urgent = _upload(radiologist, 86, priority=Study.Priority.URGENT)
    Prediction.objects.filter(pk=waiting[1].pk).update(status="running", worker="w2", attempts=1)
    main = claim.prediction_claim(prediction_id=waiting[0].pk, worker="w1")
    with django_assert_num_queries(2):
        companions = claim.predictions_claim_batch_companions(prediction=main, limit=3, worker="w1")
    assert [c.pk for c in companions] == [urgent.pk, waiting[2].pk, waiting[3].pk]
    assert all((c.status, c.worker, c.attempts) == ("running", "w1", 1) for c in companions)
    assert all(c.started_at == main.started_at for c in companions)
    assert Prediction.objects.get(pk=waiting[1].pk).worker == "w2"
    assert set(
        Prediction.objects.filter(pk__in=[waiting[4].pk, waiting[5].pk]).values_list(
            "status", flat=True
        )
    ) == {"queued"}
