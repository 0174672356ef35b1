"""The compare page: class rows matched case-insensitively, and what promotion will do."""

from __future__ import annotations

import pytest

from tests.training.views.test_views import (
    make_dataset,
    make_evaluation,
    make_metrics,
    second_version,
)
from training.views.compare import compare_rows

pytestmark = pytest.mark.django_db


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
