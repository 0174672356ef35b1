"""The patient an upload belongs to: its fields checked (typed, else read from the DICOM
file's tags) and its demographics matched against the patient on record (web process)."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from diagnosis import identity
from diagnosis.models import Patient
from training.ml.imaging import DicomInfo, UploadRejected


class UploadFieldRejected(UploadRejected):
    """One of the upload's fields (typed, or read from a DICOM tag) cannot be stored as it is."""

    def __init__(self, message: str, *, code: str, field: str) -> None:
        super().__init__(message, code=code)
        self.field = field


class IdentityMismatch(UploadRejected):
    """The patient ID is on record with another name, sex or birth date than the upload's."""

    def __init__(
        self,
        *,
        mrn: str,
        stored: identity.Demographics,
        submitted: identity.Demographics,
        fields: list[str],
    ) -> None:
        names = ", ".join(f.replace("_", " ") for f in fields)
        super().__init__(
            f"Patient {mrn} is on record with another {names}. Check that this image is of that "
            "patient; if it is, confirm the identity to add it to the patient on record (whose "
            "details stay as they are).",
            code="identity_mismatch",
        )
        self.mrn, self.stored, self.submitted, self.fields = mrn, stored, submitted, fields

    def as_dict(self) -> dict:
        """Both sets of demographics, JSON-safe (for the API's answer and the audit trail)."""
        return {
            "patient_id": self.mrn,
            "mismatched": self.fields,
            "stored": self.stored.as_dict(),
            "submitted": self.submitted.as_dict(),
        }

    def rows(self) -> list[dict]:
        """(label, on record, this upload, differs) per field, for the upload form's warning."""
        stored, submitted = self.stored.as_dict(), self.submitted.as_dict()
        sexes = dict(Patient.Sex.choices)

        def shown(key: str, value: str) -> str:
            # A blank is "not given" (shown as a dash), never a mismatch: not the choice "Unknown".
            return sexes.get(value, value) if key == "sex" and value else value

        return [
            {
                "label": label,
                "stored": shown(key, stored[key]),
                "submitted": shown(key, submitted[key]),
                "differs": key in self.fields,
            }
            for key, label in (("name", "Name"), ("sex", "Sex"), ("birth_date", "Birth date"))
        ]


# The DICOM tag each field falls back to, and how an error names the typed field.
_FIELD_TAGS = {
    "patient_id": "PatientID",
    "accession_number": "AccessionNumber",
    "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate",
}
_FIELD_LABELS = {
    "patient_id": "The patient ID",
    "accession_number": "The accession number",
    "patient_name": "The patient name",
    "patient_birth_date": "The birth date",
}


def _source_label(field: str, from_dicom: bool) -> str:
    return f"The DICOM file's {_FIELD_TAGS[field]}" if from_dicom else _FIELD_LABELS[field]


def checked_text(
    value: str, dicom: DicomInfo | None, *, field: str, max_length: int, identifier: bool = True
) -> str:
    """The typed value, else the DICOM tag's; refused (never cut) when it cannot be stored as is.

    Only spaces are trimmed: a tab or line break at either end is refused like one inside.
    """
    value = (value or "").strip(" ")
    from_dicom = not value and dicom is not None
    if from_dicom:
        value = getattr(dicom, field)
    problem = identity.text_problem(value, max_length=max_length, identifier=identifier)
    if problem is not None:
        code, message = problem
        raise UploadFieldRejected(
            f"{_source_label(field, from_dicom)} {message}", code=code, field=field
        )
    return value


def known_sex(value: str) -> str:
    value = (value or "").strip().upper()[:1]
    return value if value in Patient.Sex.values else ""


def checked_birth_date(value: dt.date | None, dicom: DicomInfo | None) -> dt.date | None:
    from_dicom = False
    if value is None and dicom is not None:
        value, from_dicom = dicom.patient_birth_date, True
    problem = identity.birth_date_problem(value, today=timezone.localdate())
    if problem is not None:
        raise UploadFieldRejected(
            f"{_source_label('patient_birth_date', from_dicom)} {problem}",
            code="bad_birth_date",
            field="patient_birth_date",
        )
    return value


def patient_for_upload(
    *, mrn: str, submitted: identity.Demographics, confirm_identity: bool
) -> tuple[Patient, IdentityMismatch | None]:
    """The patient with this ID (created when new), and the mismatch the upload confirmed."""
    name, sex, birth_date = submitted.name, submitted.sex, submitted.birth_date
    patient, created = Patient.objects.select_for_update().get_or_create(
        mrn=mrn,
        defaults={"name": name, "sex": sex, "birth_date": birth_date},
    )
    if created:
        return patient, None
    stored = identity.Demographics(
        name=patient.name, sex=patient.sex, birth_date=patient.birth_date
    )
    fields = identity.mismatched_fields(stored, submitted)
    if fields:
        mismatch = IdentityMismatch(mrn=mrn, stored=stored, submitted=submitted, fields=fields)
        if not confirm_identity:
            raise mismatch
        # Confirmed as the same patient: the record stays as it is, details filled in included
        # (they come from an upload that already disagrees with it).
        return patient, mismatch
    # Fill what we did not know; never overwrite what is recorded.
    changed: list[str] = []
    if name and not patient.name:
        patient.name, changed = name, [*changed, "name"]
    if sex and not patient.sex:
        patient.sex, changed = sex, [*changed, "sex"]
    if birth_date and not patient.birth_date:
        patient.birth_date, changed = birth_date, [*changed, "birth_date"]
    if changed:
        patient.save(update_fields=changed)
    return patient, None
