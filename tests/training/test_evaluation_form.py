"""The web evaluation form's "leave out classes the model lacks" (evaluate_model's
--skip-unknown-classes)."""

from __future__ import annotations

import pytest

from tests.training.views.conftest import make_dataset, make_evaluation
from training.models import Evaluation

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _dataset_roots(settings, tmp_path):
    settings.CXR_DATASET_ROOTS = [tmp_path]


@pytest.fixture
def queued(sent_tasks):
    """(id, keyword arguments) of each evaluation task sent, when called."""
    from training.dispatch import RUN_EVALUATION

    def calls() -> list[tuple[int, dict]]:
        assert all(t.name == RUN_EVALUATION and len(t.args) == 1 for t in sent_tasks)
        return [(t.args[0], t.kwargs) for t in sent_tasks]

    return calls


def test_the_version_page_offers_to_leave_out_unknown_classes(admin_client, model_version):
    make_dataset()
    html = admin_client.get(f"/training/models/{model_version.pk}/").content.decode()
    assert 'name="skip_unknown_classes"' in html
    assert "Leave out classes the model lacks" in html


@pytest.mark.parametrize("ticked, expected", [(True, True), (False, False)])
def test_the_form_tells_the_worker_whether_to_leave_out_unknown_classes(
    admin_client, model_version, queued, django_capture_on_commit_callbacks, ticked, expected
):
    dataset = make_dataset(classes=["normal", "pneumonia", "tuberculosis"])
    data = {"dataset": dataset.pk, "split": "all"}
    if ticked:
        data["skip_unknown_classes"] = "on"
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(f"/training/models/{model_version.pk}/evaluate/", data)
    assert resp.status_code == 302
    evaluation = Evaluation.objects.get()
    assert queued() == [(evaluation.pk, {"skip_unknown": expected})]


def test_the_task_passes_the_choice_to_the_service(monkeypatch):
    from training import services, tasks

    seen = {}
    monkeypatch.setattr(services, "evaluation_execute", lambda **kw: seen.update(kw))
    tasks.run_evaluation(41, skip_unknown=True)
    assert seen == {"evaluation_id": 41, "skip_unknown": True}
    tasks.run_evaluation(42)  # a message queued before the option existed
    assert seen == {"evaluation_id": 42, "skip_unknown": False}


def test_the_evaluations_table_lists_the_classes_left_out(admin_client, model_version):
    evaluation = make_evaluation(model_version, make_dataset())
    evaluation.metrics = {**evaluation.metrics, "skipped_classes": ["TUBERCULOSIS", "<b>x</b>"]}
    evaluation.save()
    html = admin_client.get(f"/training/models/{model_version.pk}/").content.decode()
    assert "left out: TUBERCULOSIS, &lt;b&gt;x&lt;/b&gt;" in html
