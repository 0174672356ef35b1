"""Writes of the model registry: import, promote (and so roll back)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from django.core.files import File
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from training.models import ModelPromotion, ModelVersion
from training.services.calibrations import calibration_initial_create
from training.services.validation import VersionValidation, version_validation
from training.signals import model_version_promoted, open_studies_rerun_requested, send_and_count

if TYPE_CHECKING:
    from training.ml.models.checkpoint import CheckpointMeta

logger = logging.getLogger(__name__)


class ModelImportError(Exception):
    """The file cannot become a model version; the message says why and what to do."""


class PromotionNeedsExternalValidation(Exception):
    """Promotion refused: no done evaluation on data other than the training data, and no
    override reason. The message says what to do."""

    def __init__(self, validation: VersionValidation) -> None:
        self.validation = validation
        version = validation.version
        internal = validation.internal
        trained_on = (
            f"its training dataset {internal.dataset.name}"
            if internal is not None and internal.dataset is not None
            else "the data it was trained on"
        )
        super().__init__(
            f"{version.name} has no done evaluation on a dataset other than {trained_on}: its "
            "own test split shows how it does on that data, not on the next hospital's. Evaluate "
            "it on another dataset first (its page, 'Evaluate on a dataset', or manage.py "
            f"evaluate_model {version.name} --dataset NAME --split all), or give an override "
            "reason, which is kept in the promotion history and the audit trail."
        )


def model_version_import(
    *,
    path: str | os.PathLike,
    architecture: str = "",
    classes: list[str] | None = None,
    name: str = "",
    created_by=None,
    notes: str = "",
    expected_sha256: str = "",
    normal_classes: list[str] | None = None,
) -> ModelVersion:
    """Register a torchvision state dict, or a checkpoint exported from a model version, as a
    candidate version.

    An exported checkpoint carries its architecture, classes, preprocessing, temperature and
    thresholds; a plain state dict needs `architecture` and `classes`. With `expected_sha256`
    (as shown on the exporting page) the file is refused unless it matches. The weights are
    checked by building the architecture and loading them strictly, then stored under MEDIA_ROOT
    as a checkpoint with its metadata and sha256.
    Imports torch: call it from a command or a worker, not from a web request.
    """
    from training.ml.errors import MLError
    from training.ml.models.architectures import default_preprocessing
    from training.ml.models.checkpoint import (
        CheckpointMeta,
        build_for_inference,
        load_weights_file,
        save_checkpoint,
    )

    path = Path(path)
    if not path.is_file():
        raise ModelImportError(f"No such file: {path}.")
    if expected_sha256:
        _check_sha256(path, expected_sha256)
    try:
        state_dict, meta = load_weights_file(path)
    except MLError as exc:
        raise ModelImportError(str(exc)) from exc
    architecture, classes = _architecture_and_classes(architecture, classes, meta)
    name = name.strip() or f"{architecture}-{timezone.now():%Y%m%d-%H%M%S}"
    if ModelVersion.objects.filter(name=name).exists():
        raise ModelImportError(
            f"A model version named {name!r} already exists; pick another --name."
        )

    try:
        model = build_for_inference(architecture, classes, state_dict)
    except MLError as exc:
        raise ModelImportError(str(exc)) from exc
    if meta is not None and meta.arch != architecture:
        raise ModelImportError(
            f"The checkpoint says its architecture is {meta.arch!r}, not {architecture!r}."
        )
    normal_classes = _normal_classes(normal_classes, classes, meta)
    prep = meta.preprocessing if meta is not None else default_preprocessing(architecture)
    temperature = meta.temperature if meta is not None else 1.0
    thresholds = (meta.thresholds or {}) if meta is not None else {}
    checkpoint_meta = CheckpointMeta(
        arch=architecture,
        classes=classes,
        preprocessing=prep,
        temperature=temperature,
        thresholds=thresholds,
        extra={"name": name, "source": path.name, "normal_classes": normal_classes},
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / "weights.pt"
        sha256 = save_checkpoint(tmp_path, model, checkpoint_meta)
        version = ModelVersion(
            name=name,
            architecture=architecture,
            class_labels=classes,
            input_size=prep.input_size,
            mean=list(prep.mean),
            std=list(prep.std),
            temperature=temperature,
            thresholds=thresholds,
            normal_classes=normal_classes,
            sha256=sha256,
            source=str(path)[:255],
            notes=notes,
            created_by=created_by,
        )
        with transaction.atomic(), tmp_path.open("rb") as fh:
            version.weights.save(
                f"{slugify(name) or 'model'}-{sha256[:12]}.pt", File(fh), save=False
            )
            try:
                version.save()
            except BaseException:
                version.weights.storage.delete(version.weights.name)
                raise
            calibration_initial_create(version=version)
    logger.info("imported model version %s (%s, %s)", name, architecture, ", ".join(classes))
    return version


def _check_sha256(path: Path, expected_sha256: str) -> None:
    from training.ml.models.checkpoint import file_sha256

    digest = file_sha256(path)
    if digest.lower() != expected_sha256.strip().lower():
        raise ModelImportError(
            f"The file's sha256 is {digest}, not the expected {expected_sha256.strip()}: it "
            "was changed or damaged in transit. Nothing was imported."
        )


def _architecture_and_classes(
    architecture: str, classes: list[str] | None, meta: CheckpointMeta | None
) -> tuple[str, list[str]]:
    """The architecture and class labels given, else the checkpoint's, checked."""
    from training.ml.models.architectures import ARCHITECTURES

    architecture = architecture or (meta.arch if meta is not None else "")
    classes = [
        c.strip() for c in (classes or (meta.classes if meta is not None else [])) if c.strip()
    ]
    if not architecture:
        raise ModelImportError("A plain state dict needs --arch (and --classes).")
    if architecture not in ARCHITECTURES:
        raise ModelImportError(
            f"Unknown architecture {architecture!r}. Supported: {', '.join(ARCHITECTURES)}."
        )
    if len(classes) < 2:
        raise ModelImportError("Give at least two class labels, e.g. --classes normal,pneumonia.")
    if len(set(classes)) != len(classes):
        raise ModelImportError(f"Class labels must be distinct: {', '.join(classes)}.")
    return architecture, classes


def _normal_classes(
    normal_classes: list[str] | None, classes: list[str], meta: CheckpointMeta | None
) -> list[str]:
    """The normal classes given, else the checkpoint's, else the default for these classes;
    named as the model names them (matched case-insensitively)."""
    if (
        normal_classes is None
        and meta is not None
        and isinstance((meta.extra or {}).get("normal_classes"), list)
    ):
        normal_classes = list(meta.extra["normal_classes"])
    if normal_classes is None:
        return ModelVersion.default_normal_classes(classes)
    by_key = {c.lower(): c for c in classes}
    unknown = [c for c in normal_classes if c.strip().lower() not in by_key]
    if unknown:
        raise ModelImportError(
            f"--normal-classes names classes the model lacks: {', '.join(unknown)}. "
            f"Its classes: {', '.join(classes)}."
        )
    return [by_key[c.strip().lower()] for c in normal_classes]


@transaction.atomic
def model_version_promote(
    *,
    version: ModelVersion,
    promoted_by=None,
    reason: str = "",
    request=None,
    rerun_open: bool = False,
    override_reason: str = "",
) -> ModelVersion:
    """Put `version` into production; the current production version is retired.

    The gate: the version needs a done external evaluation (training.services.validation), else
    an `override_reason`, or PromotionNeedsExternalValidation is raised and nothing changes. The
    external evaluations there were and the override reason are kept on the ModelPromotion row
    and in the audit event. A roll back passes the same gate, on the earlier version's own
    evaluations.

    Promoting an earlier version is the roll back. Predictions keep the version that made them;
    predictions that were waiting for a production model are given this one and queued.
    With `rerun_open`, every open (unsigned) study is re-analysed with it, behind live uploads
    (by the receiver of training.signals.open_studies_rerun_requested), audited with the counts; the returned version carries them
    as ``reanalysis`` (a ReanalysisOutcome; None without `rerun_open`).
    """
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    current = (
        ModelVersion.objects.select_for_update()
        .filter(status=ModelVersion.Status.PRODUCTION)
        .exclude(pk=version.pk)
        .first()
    )
    version.reanalysis = None
    if version.status == ModelVersion.Status.PRODUCTION:
        return version
    validation = version_validation(version=version)
    override_reason = override_reason.strip()
    if validation.validated:
        override_reason = ""  # nothing was overridden
    elif not override_reason:
        raise PromotionNeedsExternalValidation(validation)
    external = validation.snapshot()
    if current is not None:
        current.status = ModelVersion.Status.RETIRED
        current.save(update_fields=["status"])
    version.status = ModelVersion.Status.PRODUCTION
    version.promoted_at = timezone.now()
    version.promoted_by = promoted_by if getattr(promoted_by, "pk", None) else None
    version.promotion_reason = reason
    version.save(update_fields=["status", "promoted_at", "promoted_by", "promotion_reason"])
    ModelPromotion.objects.create(
        model_version=version,
        previous_version=current,
        promoted_by=version.promoted_by,
        reason=reason,
        external_evaluations=external,
        override_reason=override_reason,
    )
    queued = send_and_count(model_version_promoted, version=version)
    audit(
        request,
        AuditEvent.Action.PROMOTE,
        version,
        user=version.promoted_by,
        detail={
            "previous": current.name if current else None,
            "reason": reason,
            "external_evaluations": external,
            "override_reason": override_reason,
        },
    )
    if rerun_open:
        outcomes = open_studies_rerun_requested.send(sender=ModelVersion, version=version)
        version.reanalysis = outcomes[0][1] if outcomes else None
    if version.reanalysis is not None:
        audit(
            request,
            AuditEvent.Action.REANALYSE,
            version,
            user=version.promoted_by,
            detail={"scope": "open studies", **version.reanalysis.as_detail(version)},
        )
    logger.info(
        "promoted %s to production (was %s); %d waiting predictions queued",
        version.name,
        current.name if current else "none",
        queued,
    )
    return version
