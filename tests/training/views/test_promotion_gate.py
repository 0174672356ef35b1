"""The promotion gate on the pages: the override field appears only when needed, a refused
promotion says why and keeps the form, the model, versions and compare pages label the internal
test and the external evaluations, and the headline is the external figure when there is one."""

from __future__ import annotations

import pytest
from django.template.defaultfilters import floatformat

from tests.training.views.conftest import make_dataset, make_evaluation, make_run, second_version
from training.models import ModelPromotion, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db

INTERNAL = "Internal test (same dataset as training; patients grouped: {})"


@pytest.fixture
def trained(model_version):
    kermany = make_dataset("kermany", root="/data/kermany")
    kermany.grouping = "pattern"
    kermany.save()
    run = make_run(kermany, TrainingRun.Status.DONE)
    model_version.training_run, model_version.metrics = run, run.test_metrics
    model_version.save()
    make_evaluation(model_version, kermany, seed=3)
    return model_version


def _external(version, name="adult-<b>hospital</b>", root="/data/adult", **kwargs):
    return make_evaluation(version, make_dataset(name, root=root), **kwargs)


def test_an_unvalidated_version_s_page_asks_for_an_override_and_labels_the_internal_test(
    admin_client, trained
):
    html = admin_client.get(f"/training/models/{trained.pk}/").content.decode()
    assert "Not externally validated." in html
    assert 'data-testid="override"' in html and 'name="override_reason"' in html
    assert INTERNAL.format("yes") in html
    assert "Not external: the training dataset" in html
    # The headline is the internal figure, labelled as such.
    headline = html.split('data-testid="headline"')[1].split("</div>")[0]
    assert floatformat(trained.metrics["accuracy"], 3) in headline
    assert INTERNAL.format("yes") in headline


def test_the_web_form_refuses_without_external_evaluation_and_keeps_what_was_typed(
    admin_client, trained
):
    resp = admin_client.post(
        f"/training/models/{trained.pk}/promote/",
        {"reason": "looks fine", "override_reason": " "},
    )
    assert resp.status_code == 400
    html = resp.content.decode()
    assert "has no done evaluation on a dataset other than its training dataset kermany" in html
    assert "looks fine" in html
    trained.refresh_from_db()
    assert trained.status == ModelVersion.Status.CANDIDATE
    assert not ModelPromotion.objects.exists()

    resp = admin_client.post(
        f"/training/models/{trained.pk}/promote/",
        {"reason": "looks fine", "override_reason": "Pilot: <script>x</script> no data yet."},
    )
    assert resp.status_code == 302
    promotion = ModelPromotion.objects.get()
    assert promotion.override_reason == "Pilot: <script>x</script> no data yet."
    assert promotion.external_evaluations == []
    html = admin_client.get(f"/training/models/{trained.pk}/").content.decode()
    assert "Promoted without external evaluation:" in html
    assert "Pilot: &lt;script&gt;x&lt;/script&gt; no data yet." in html
    assert "<script>x</script>" not in html


def test_a_validated_version_leads_with_the_largest_external_evaluation(admin_client, trained):
    small = _external(trained, "small-site", root="/data/small", seed=5)
    large = _external(trained, seed=6)
    large.metrics = {**large.metrics, "n": 900}
    large.save()
    small.metrics = {**small.metrics, "n": 30}
    small.save()

    html = admin_client.get(f"/training/models/{trained.pk}/").content.decode()
    assert 'data-testid="override"' not in html and "Not externally validated" not in html
    headline = html.split('data-testid="headline"')[1].split("</div>")[0]
    assert floatformat(large.metrics["accuracy"], 3) in headline
    assert "External: adult-&lt;b&gt;hospital&lt;/b&gt; / test" in headline
    assert "(900 images)" in headline
    assert "<b>hospital</b>" not in html  # a dataset name is escaped like any text
    assert INTERNAL.format("yes") in html  # still shown, beside the external ones
    per_class = large.metrics["per_class"]["covid19"]
    assert floatformat(per_class["sensitivity"], 3) + " / " in html

    resp = admin_client.post(f"/training/models/{trained.pk}/promote/", {"reason": "validated"})
    assert resp.status_code == 302
    promotion = ModelPromotion.objects.get()
    assert promotion.override_reason == ""
    assert {e["n"] for e in promotion.external_evaluations} == {30, 900}
    history = admin_client.get("/training/models/").content.decode()
    assert "Externally validated on adult-&lt;b&gt;hospital&lt;/b&gt;, small-site" in history


def test_the_versions_list_shows_which_versions_are_externally_validated(admin_client, trained):
    other = second_version(trained, metrics={"accuracy": 0.5})
    evaluation = _external(other, "nih", root="/data/nih")
    html = admin_client.get("/training/models/").content.decode()
    rows = {
        name: html.split(f">{name}</a>")[1].split("</tr>")[0] for name in (trained.name, other.name)
    }
    assert "unvalidated-badge" in rows[trained.name] and "internal test" in rows[trained.name]
    assert "validated-badge" in rows[other.name] and "(1 evaluation)" in rows[other.name]
    assert "External: nih / test" in rows[other.name]
    assert floatformat(evaluation.metrics["accuracy"], 3) in rows[other.name]


def test_the_compare_page_shows_both_sides_internal_and_external(admin_client, trained, admin_user):
    from training.services import model_version_promote

    production = second_version(trained)
    nih = _external(production, "nih", root="/data/nih")
    nih.metrics = {**nih.metrics, "n": 500}
    nih.save()
    model_version_promote(version=production, reason="validated on nih")
    kermany = trained.training_run.dataset
    # An imported version's training data is unknown: kermany counts as external for it, but
    # nih has more images, so it leads.
    make_evaluation(production, kermany, seed=4)

    html = admin_client.get(
        f"/training/compare/?candidate={trained.pk}&dataset={kermany.pk}"
    ).content.decode()
    assert "For the candidate, this dataset is the training dataset" in html
    assert "not externally validated" in html and "externally validated" in html
    assert INTERNAL.format("yes") in html
    assert 'data-testid="headline-production"' in html
    production_headline = html.split('data-testid="headline-production"')[1].split("</div>")[0]
    assert "External: nih / test" in production_headline
    assert 'data-testid="override"' in html  # the candidate's promote form asks for it


def test_the_overview_labels_the_production_figure_and_the_candidates(admin_client, trained):
    from training.services import model_version_promote

    production = second_version(trained)
    nih = _external(production, "nih", root="/data/nih")
    model_version_promote(version=production, reason="validated on nih")
    html = admin_client.get("/training/").content.decode()
    production_headline = html.split('data-testid="headline"')[1].split("</div>")[0]
    assert "External: nih / test" in production_headline
    assert floatformat(nih.metrics["accuracy"], 3) in production_headline
    candidate_row = html.split(f">{trained.name}</a>")[1].split("</tr>")[0]
    assert "not externally validated" in candidate_row
    assert floatformat(trained.metrics["accuracy"], 3) in candidate_row
