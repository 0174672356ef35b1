"""The promotion gate (training.services.validation, model_version_promote): a version needs a
done evaluation on other data, or an override reason that is recorded and audited; on every
path (the service, a roll back, import_model --promote, the admin action)."""

from __future__ import annotations

import pytest
from django.contrib.admin.sites import site
from django.contrib.messages.storage.fallback import FallbackStorage
from django.core.management import CommandError, call_command
from django.test import RequestFactory

from cxrweb.audit.models import AuditEvent
from tests.conftest import CLASSES
from tests.training.views.conftest import make_dataset, make_evaluation, make_run, second_version
from training.models import Evaluation, ModelPromotion, ModelVersion, TrainingRun
from training.services import (
    PromotionNeedsExternalValidation,
    model_version_promote,
    version_validation,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def trained(model_version):
    """A version trained on kermany (root /data/kermany), evaluated there only."""
    kermany = make_dataset("kermany", root="/data/kermany")
    run = make_run(kermany, TrainingRun.Status.DONE)
    model_version.training_run, model_version.metrics = run, run.test_metrics
    model_version.save()
    make_evaluation(model_version, kermany)
    return model_version


def _external(version, name="adult-hospital", root="/data/adult", **kwargs) -> Evaluation:
    return make_evaluation(version, make_dataset(name, root=root), **kwargs)


def test_the_training_dataset_again_is_not_external_validation(trained):
    kermany = trained.training_run.dataset
    make_evaluation(trained, make_dataset("kermany-again", root="/data/kermany/"))
    make_evaluation(trained, make_dataset("kermany-train-only", root="/data/kermany/train"))
    copy = make_dataset("kermany-copy", root="/mnt/copy-of-kermany")
    copy.scan = {**copy.scan, "sha256": ["a" * 64, "b" * 64]}
    copy.save()
    kermany.scan = {**kermany.scan, "sha256": ["b" * 64, "c" * 64]}
    kermany.save()
    make_evaluation(trained, copy)
    make_evaluation(trained, make_dataset("failed-elsewhere", root="/data/other"), status="failed")

    validation = version_validation(version=trained)

    assert not validation.validated and validation.headline is None
    why = {c.evaluation.dataset.name: c.same_data for c in validation.evaluations}
    assert why == {
        "kermany": "the training dataset",
        "kermany-again": "the training dataset's folder (kermany)",
        "kermany-train-only": "a folder inside or around the training dataset's (kermany)",
        "kermany-copy": "1 image(s) also in the training dataset kermany",
    }
    assert validation.internal is not None and validation.internal.dataset == kermany
    assert validation.internal.grouped is False


def test_another_dataset_is_external_and_the_largest_leads(trained):
    small = _external(trained, "small-site", root="/data/small")
    large = _external(trained, "adult-hospital", root="/data/adult")
    large.metrics = {**large.metrics, "n": 500}
    large.save()
    small.metrics = {**small.metrics, "n": 40}
    small.save()

    validation = version_validation(version=trained)

    assert validation.validated
    assert {e.pk for e in validation.external} == {small.pk, large.pk}
    assert validation.headline == large


def test_promotion_without_external_evaluation_is_refused_and_changes_nothing(trained):
    with pytest.raises(PromotionNeedsExternalValidation) as refused:
        model_version_promote(version=trained, reason="looks good", override_reason="   ")
    message = str(refused.value)
    assert "no done evaluation on a dataset other than its training dataset kermany" in message
    assert "evaluate_model" in message and "override reason" in message
    trained.refresh_from_db()
    assert trained.status == ModelVersion.Status.CANDIDATE
    assert not ModelPromotion.objects.exists()
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.PROMOTE).exists()


def test_an_external_evaluation_opens_the_gate_and_is_recorded(trained, admin_user):
    evaluation = _external(trained)

    model_version_promote(version=trained, promoted_by=admin_user, reason="validated")

    promotion = ModelPromotion.objects.get()
    assert promotion.override_reason == ""
    assert promotion.external_evaluations == [
        {
            "evaluation": evaluation.pk,
            "dataset": "adult-hospital",
            "split": "test",
            "n": evaluation.metrics["n"],
            "accuracy": evaluation.metrics["accuracy"],
            "balanced_accuracy": evaluation.metrics["balanced_accuracy"],
            "macro_auc": evaluation.metrics["macro_auc"],
            "ece": evaluation.metrics["ece"],
        }
    ]
    event = AuditEvent.objects.get(action=AuditEvent.Action.PROMOTE)
    assert event.detail["external_evaluations"] == promotion.external_evaluations
    assert event.detail["override_reason"] == ""


def test_an_override_reason_promotes_and_is_recorded_and_audited(trained, admin_user):
    model_version_promote(
        version=trained,
        promoted_by=admin_user,
        reason="pilot",
        override_reason="  The only other data is the pilot site's, not registered yet.  ",
    )
    trained.refresh_from_db()
    assert trained.is_production
    promotion = ModelPromotion.objects.get()
    assert promotion.external_evaluations == []
    assert promotion.override_reason == (
        "The only other data is the pilot site's, not registered yet."
    )
    event = AuditEvent.objects.get(action=AuditEvent.Action.PROMOTE)
    assert event.detail["override_reason"] == promotion.override_reason
    assert event.detail["external_evaluations"] == []


def test_a_roll_back_passes_the_same_gate_on_the_earlier_version_s_evaluations(trained):
    newer = second_version(trained)
    _external(newer)
    model_version_promote(version=trained, reason="first", override_reason="pilot")
    model_version_promote(version=newer, reason="better outside")
    trained.refresh_from_db()
    assert trained.status == ModelVersion.Status.RETIRED

    with pytest.raises(PromotionNeedsExternalValidation):
        model_version_promote(version=trained, reason="roll back")
    assert ModelVersion.objects.get(status="production") == newer

    _external(trained, "nih-sample", root="/data/nih")
    model_version_promote(version=trained, reason="roll back")
    assert ModelVersion.objects.get(status="production") == trained
    last = ModelPromotion.objects.order_by("-pk").first()
    assert [e["dataset"] for e in last.external_evaluations] == ["nih-sample"]


def test_any_done_evaluation_of_an_imported_version_is_external(model_version):
    # An imported version's training data is not known here: it has no internal test.
    validation = version_validation(version=model_version)
    assert validation.internal is None and not validation.validated
    make_evaluation(model_version, make_dataset("kermany"))
    assert version_validation(version=model_version).validated
    # Figures that came with it are an internal test whose grouping is not known.
    model_version.metrics = {"accuracy": 0.9}
    internal = version_validation(version=model_version).internal
    assert internal is not None and internal.dataset is None and internal.grouped is None


def test_import_model_promote_is_refused_without_an_override_reason(state_dict_file):
    args = ["import_model", state_dict_file("mobilenet_v2"), "--arch", "mobilenet_v2"]
    args += ["--classes", ",".join(CLASSES), "--promote"]
    with pytest.raises(CommandError, match="--promote needs --override-reason"):
        call_command(*args)
    assert not ModelVersion.objects.exists()  # refused before importing anything

    call_command(*args, "--override-reason", "validated at the vendor on 3 sites")
    [version] = ModelVersion.objects.all()
    assert version.is_production
    assert version.promotions.get().override_reason == "validated at the vendor on 3 sites"


def _admin_request(admin_user):
    request = RequestFactory().post("/admin/training/modelversion/")
    request.user = admin_user
    request.session = {}
    request._messages = FallbackStorage(request)
    return request


def test_the_admin_action_refuses_an_unvalidated_version_and_says_where_to_override(
    trained, admin_user
):
    admin = site._registry[ModelVersion]
    request = _admin_request(admin_user)
    admin.promote(request, ModelVersion.objects.filter(pk=trained.pk))
    [message] = [str(m) for m in request._messages]
    assert "no done evaluation on a dataset other than" in message
    assert "override reason can be given on the version's page" in message
    trained.refresh_from_db()
    assert trained.status == ModelVersion.Status.CANDIDATE

    _external(trained)
    admin.promote(_admin_request(admin_user), ModelVersion.objects.filter(pk=trained.pk))
    trained.refresh_from_db()
    assert trained.is_production
