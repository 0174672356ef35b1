"""The compare page (training/views/compare.py): evaluate what is missing, both metric sets with the
difference, class rows matched case-insensitively, and what promotion will do."""

from __future__ import annotations

import pytest
from django.template.defaultfilters import floatformat

from tests.training.views.conftest import (
    make_dataset,
    make_evaluation,
    make_metrics,
    second_version,
    sent_ids,
)
from training.dispatch import RUN_EVALUATION
from training.models import Evaluation
from training.views.compare import compare_rows

pytestmark = pytest.mark.django_db


def test_compare_offers_to_evaluate_what_is_missing_then_polls(
    admin_client, production_model, dataset, sent_tasks, django_capture_on_commit_callbacks
):
    queued = sent_ids(sent_tasks, RUN_EVALUATION)
    candidate = second_version(production_model)
    url = f"/training/compare/?candidate={candidate.pk}&dataset={dataset.pk}"
    html = admin_client.get(url).content.decode()
    assert "Evaluate candidate and production on this test split" in html
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(
            "/training/compare/", {"candidate": candidate.pk, "dataset": dataset.pk}
        )
    assert resp.status_code == 302 and resp["Location"] == url
    evaluations = Evaluation.objects.all()
    assert {(e.model_version_id, e.split) for e in evaluations} == {
        (candidate.pk, "test"),
        (production_model.pk, "test"),
    }
    assert sorted(queued()) == sorted(e.pk for e in evaluations)
    html = admin_client.get(url).content.decode()
    assert "data-poll-ms" in html and "Evaluate candidate" not in html
    # posting again does not queue the same evaluations twice
    admin_client.post("/training/compare/", {"candidate": candidate.pk, "dataset": dataset.pk})
    assert Evaluation.objects.count() == 2


def test_compare_shows_both_metric_sets_with_the_difference(
    admin_client, production_model, dataset
):
    candidate = second_version(production_model)
    c = make_evaluation(candidate, dataset, skill=3.0, seed=1)
    p = make_evaluation(production_model, dataset, skill=1.0, seed=2)
    resp = admin_client.get(
        f"/training/compare/results/?candidate={candidate.pk}&dataset={dataset.pk}"
    )
    html = resp.content.decode()
    diff = c.metrics["accuracy"] - p.metrics["accuracy"]
    assert diff > 0
    assert floatformat(c.metrics["accuracy"], 3) in html
    assert floatformat(p.metrics["accuracy"], 3) in html
    assert f"+{floatformat(diff, 3)}" in html and 'class="diff-better"' in html
    for text in (
        "Balanced accuracy",
        "Macro AUC",
        "ECE",
        "covid19",
        "sensitivity",
        "specificity",
        "AUC",
    ):
        assert text in html, text
    page = admin_client.get(f"/training/compare/?candidate={candidate.pk}&dataset={dataset.pk}")
    assert "Promote second-mobilenet to production" in page.content.decode()


def test_promoting_from_the_compare_page_returns_to_it(admin_client, production_model, dataset):
    candidate = second_version(production_model)
    back = f"/training/compare/?candidate={candidate.pk}&dataset={dataset.pk}"
    resp = admin_client.post(
        f"/training/models/{candidate.pk}/promote/",
        {"reason": "better on kermany", "next": back, "override_reason": "test weights"},
    )
    assert resp["Location"] == back
    candidate.refresh_from_db()
    assert candidate.is_production
    page = admin_client.get(back)
    assert page.status_code == 200
    assert "second-mobilenet is the production version" in page.content.decode()
    assert "Promote second-mobilenet" not in page.content.decode()


def test_classes_that_differ_only_in_case_share_one_row():
    candidate, _ = make_metrics(classes=["Normal", "Pneumonia"], seed=1)
    production, _ = make_metrics(classes=["NORMAL", "PNEUMONIA"], seed=2)
    rows = [r for r in compare_rows(candidate, production) if r["group"]]
    assert sorted({r["group"] for r in rows}) == ["Normal", "Pneumonia"]  # the candidate's names
    sensitivity = next(r for r in rows if r["group"] == "Normal" and r["label"] == "sensitivity")
    assert sensitivity["candidate"] == candidate["per_class"]["Normal"]["sensitivity"]
    assert sensitivity["production"] == production["per_class"]["NORMAL"]["sensitivity"]
    assert sensitivity["diff"] is not None


def test_a_class_only_one_side_has_keeps_its_own_row():
    candidate, _ = make_metrics(classes=["normal", "pneumonia", "covid19"], seed=1)
    production, _ = make_metrics(classes=["NORMAL", "PNEUMONIA"], seed=2)
    rows = [r for r in compare_rows(candidate, production) if r["group"] == "covid19"]
    assert rows and all(r["production"] is None and r["diff"] is None for r in rows)


def test_the_page_says_promotion_will_retire_production_not_that_it_is_retired(
    admin_client, production_model
):
    dataset = make_dataset()
    candidate = second_version(production_model)
    make_evaluation(candidate, dataset)
    html = admin_client.get(
        f"/training/compare/?candidate={candidate.pk}&dataset={dataset.pk}"
    ).content.decode()
    assert f"{production_model.name} is retired" not in html
    assert f"Promoting {candidate.name} retires {production_model.name}, now in production" in html


def test_without_production_the_page_says_the_candidate_becomes_the_first(
    admin_client, model_version
):
    dataset = make_dataset()
    html = admin_client.get(
        f"/training/compare/?candidate={model_version.pk}&dataset={dataset.pk}"
    ).content.decode()
    assert "is retired" not in html
    assert f"{model_version.name} becomes the first" in html
