"""De-identified exports: read studies, labelled by their signed readings, become a training
dataset.

``dataset_export_create`` records what was asked (and audits it) and queues the work;
``dataset_export_run`` (on the training queue) writes one ImageFolder tree under
CXR_EXPORT_ROOT::

    <export>/<final label>/<patient key>_<study key>_<n>.dcm|.png
    <export>/groups.csv      path,patient (the patient keys: the split groups by them)
    <export>/manifest.json   what was exported and left out, without patient data

and registers it as a training dataset grouped by those keys. DICOM images go through the
PS3.15 Basic Profile (:mod:`training.ml.imaging.deid`); PNG/JPEG uploads carry no header and are
written as plain PNGs without metadata (their pixels are what the radiologist saw; burned-in
text cannot be checked there, docs/operations.md says so). The keys are HMACs of the record and
accession numbers (CXR_PSEUDONYM_KEY), so two exports of one patient agree.

A study is exported with the final label of its current signed reading (the last of its chain of
amendments); a study with no reading, or read as "other", is left out with the reason, as is an
image that cannot be de-identified (Burned In Annotation YES).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from diagnosis.dispatch import dataset_export_enqueue_on_commit
from diagnosis.export_models import DatasetExport
from diagnosis.models import Image, Reading, Study

logger = logging.getLogger(__name__)

__all__ = ["ExportRejected", "dataset_export_create", "dataset_export_run", "export_candidates"]

# A class folder name: the label as radiologists sign it, when it is safe as one path segment.
_LABEL_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+()-]{0,63}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,119}$")


class ExportRejected(ValueError):
    """The export cannot be made as asked; the message says what to change."""


@dataclass(frozen=True)
class ExportCandidate:
    """A study that can be exported: its label, and how many images it has."""

    study: Study
    label: str | None  # None when it would be left out
    reason: str  # why it would be left out ("" when it is exported)
    images: int


def pseudonym_secret() -> bytes:
    key = settings.CXR_PSEUDONYM_KEY or ""
    if key:
        return key.encode()
    return hashlib.sha256(b"cxr-pseudonym\x00" + settings.SECRET_KEY.encode()).digest()


def _study_label(study: Study) -> tuple[str | None, str]:
    # A study has one current reading: the end of its chain of amendments.
    current = [r for r in study.readings.all() if r.is_current]
    if not current:
        return None, "no signed reading"
    label = max(current, key=lambda r: r.signed_at).final_label.strip()
    if label == Reading.OTHER:
        return None, "its final label is 'other' (a finding outside the model's classes)"
    if not _LABEL_FOLDER.match(label) or label in (".", ".."):
        return None, "its final label cannot name a class folder"
    return label, ""


def export_candidates(
    *, signed_from=None, signed_to=None, study_ids: list[int] | None = None
) -> list[ExportCandidate]:
    """Studies with a signed reading (in the date range, or among ``study_ids``), newest first,
    each with the label it would be exported under or why it would be left out."""
    studies = Study.objects.filter(readings__isnull=False)
    if signed_from:
        studies = studies.filter(readings__signed_at__date__gte=signed_from)
    if signed_to:
        studies = studies.filter(readings__signed_at__date__lte=signed_to)
    if study_ids is not None:
        studies = Study.objects.filter(pk__in=study_ids)
    studies = (
        studies.distinct()
        .select_related("patient")
        .prefetch_related("readings__amended_by", "images")
        .order_by("-pk")
    )
    out = []
    for study in studies:
        label, reason = _study_label(study)
        out.append(ExportCandidate(study, label, reason, len(study.images.all())))
    return out


def _export_folder(name: str) -> Path:
    root = Path(settings.CXR_EXPORT_ROOT)
    if not any(
        root.resolve().is_relative_to(Path(r).resolve()) for r in settings.CXR_DATASET_ROOTS
    ):
        raise ExportRejected(
            f"CXR_EXPORT_ROOT ({root}) is not under any of CXR_DATASET_ROOTS, so an export could "
            "not become a training dataset: ask the administrator to move it under one."
        )
    return root / name


def dataset_export_create(
    *, name: str, study_ids: list[int], actor, request=None, enqueue: bool = True
) -> DatasetExport:
    """Record an export of ``study_ids`` under ``name`` and audit it; queue it for the training
    workers unless ``enqueue`` is False (the command runs it itself)."""
    from training.models import Dataset

    name = (name or "").strip()
    if not _NAME.match(name):
        raise ExportRejected(
            "Name the export with letters, digits, '.', '_' or '-' (it names a folder and a "
            "dataset), e.g. site-2026-12."
        )
    if (
        DatasetExport.objects.filter(name=name).exists()
        or Dataset.objects.filter(name=name).exists()
    ):
        raise ExportRejected(f"An export or dataset named {name!r} already exists.")
    ids = sorted({int(i) for i in study_ids})
    if not ids:
        raise ExportRejected("Select at least one study with a signed reading.")
    found = set(Study.objects.filter(pk__in=ids).values_list("pk", flat=True))
    if missing := [i for i in ids if i not in found]:
        raise ExportRejected(f"No such studies: {', '.join(map(str, missing[:10]))}.")
    folder = _export_folder(name)
    if folder.exists():
        raise ExportRejected(f"{folder} already exists; choose another name.")
    with transaction.atomic():
        export = DatasetExport.objects.create(
            name=name, study_ids=ids, folder=str(folder), created_by=actor
        )
        audit(
            request,
            AuditEvent.Action.DATASET_EXPORT,
            export,
            user=actor,
            detail={"export": name, "studies": ids},
        )
        if enqueue:
            dataset_export_enqueue_on_commit(export.pk)
    return export


def dataset_export_run(*, export_id: int) -> DatasetExport | None:
    """Write the export queued as ``export_id`` and register it as a dataset (training worker).
    Only a queued export is claimed, so a redelivered message does nothing."""
    claimed = DatasetExport.objects.filter(pk=export_id, status=DatasetExport.Status.QUEUED).update(
        status=DatasetExport.Status.RUNNING
    )
    if not claimed:
        return None
    export = DatasetExport.objects.get(pk=export_id)
    try:
        written = _write(export)
    except Exception as exc:  # noqa: BLE001 - any failure is the export's, shown on its row
        logger.exception("export %s failed", export.name)
        return _finish(export, error=f"The export failed: {exc}")
    export.images, export.studies_exported = written.images, written.studies
    export.patients, export.class_counts = len(written.patients), written.class_counts
    export.excluded = written.excluded
    if not written.images:
        return _finish(export, error="Nothing could be exported (see the studies left out).")
    return _register(export, written)


@dataclass
class _Written:
    images: int = 0
    studies: int = 0
    patients: set[str] = field(default_factory=set)
    class_counts: dict[str, int] = field(default_factory=dict)
    excluded: list[dict[str, str]] = field(default_factory=list)
    groups: list[tuple[str, str]] = field(default_factory=list)


def _write(export: DatasetExport) -> _Written:
    from training.ml.imaging.deid import DeidentificationRefused, pseudonym

    secret = pseudonym_secret()
    folder = Path(export.folder)
    folder.mkdir(parents=True, exist_ok=False)
    out = _Written()
    for candidate in export_candidates(study_ids=export.study_ids):
        study = candidate.study
        patient_key = pseudonym(secret, "patient", study.patient.mrn, prefix="P")
        study_key = pseudonym(secret, "study", study.accession_number, prefix="S")
        if candidate.label is None:
            out.excluded.append({"key": study_key, "reason": candidate.reason})
            continue
        written_here = 0
        for n, image in enumerate(sorted(study.images.all(), key=lambda i: i.pk), start=1):
            data = image.original.read() if image.original else b""
            image.original.close()
            try:
                payload, suffix = _deidentified(image, data, secret, patient_key)
            except DeidentificationRefused as exc:
                out.excluded.append({"key": f"{study_key}_{n}", "reason": str(exc)})
                continue
            rel = f"{candidate.label}/{patient_key}_{study_key}_{n}{suffix}"
            (folder / candidate.label).mkdir(exist_ok=True)
            (folder / rel).write_bytes(payload)
            out.groups.append((rel, patient_key))
            out.class_counts[candidate.label] = out.class_counts.get(candidate.label, 0) + 1
            written_here += 1
        if written_here:
            out.images += written_here
            out.studies += 1
            out.patients.add(patient_key)
    _write_sidecars(folder, export, out)
    return out


def _deidentified(image: Image, data: bytes, secret: bytes, patient_key: str):
    from training.ml.imaging.deid import DeidentificationRefused, deidentify_dicom

    if image.format == Image.Format.DICOM:
        return deidentify_dicom(data, secret=secret, patient_key=patient_key), ".dcm"
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data)) as pil:
            pil.load()
            plain = pil.convert("L") if pil.mode not in ("L", "I;16") else pil.copy()
    except OSError as exc:
        raise DeidentificationRefused(f"the stored image could not be read ({exc})") from exc
    buffer = io.BytesIO()
    plain.save(buffer, format="PNG")  # no text chunks, no EXIF: pixels only
    return buffer.getvalue(), ".png"


def _write_sidecars(folder: Path, export: DatasetExport, out: _Written) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path", "patient"])
    writer.writerows(out.groups)
    (folder / "groups.csv").write_text(text.getvalue())
    manifest = {
        "export": export.name,
        "created_at": timezone.now().isoformat(),
        "profile": "DICOM PS3.15 Basic Application Level Confidentiality Profile",
        "labels": "the final label of each study's current signed reading",
        "images": out.images,
        "studies": out.studies,
        "patients": len(out.patients),
        "class_counts": out.class_counts,
        "excluded": out.excluded,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _register(export: DatasetExport, written: _Written) -> DatasetExport:
    from training.services import DatasetRejected, dataset_register

    groups_csv = (Path(export.folder) / "groups.csv").read_text()
    try:
        dataset = dataset_register(
            name=export.name,
            root=export.folder,
            created_by=export.created_by,
            groups_csv=groups_csv,
            scan_now=True,
        )
    except DatasetRejected as exc:
        return _finish(
            export,
            error=(
                f"{written.images} images were exported to {export.folder}, but it could not be "
                f"registered as a dataset: {exc} Add studies and export again, or register the "
                f"folder with `manage.py register_dataset NAME {export.folder} --groups "
                f"{export.folder}/groups.csv` once it holds enough."
            ),
        )
    export.dataset = dataset
    if dataset.status != dataset.Status.READY:
        return _finish(
            export,
            error=(
                f"{written.images} images were exported to {export.folder} and registered as "
                f"dataset {dataset.name!r}, but its scan refused them: {dataset.error} The files "
                f"stay; export more studies under a new name, or add images to the folder and "
                f"register it again with `manage.py register_dataset`."
            ),
        )
    return _finish(export)


def _finish(export: DatasetExport, *, error: str = "") -> DatasetExport:
    export.status = DatasetExport.Status.FAILED if error else DatasetExport.Status.DONE
    export.error = error
    export.finished_at = timezone.now()
    export.save()
    return export
