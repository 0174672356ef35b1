from __future__ import annotations

from django import forms
from django.conf import settings

from diagnosis.models import Patient, Study


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


class StudyUploadForm(forms.Form):
    image = forms.FileField(
        label="Chest X-ray",
        help_text="PNG, JPEG or DICOM. The file's content decides its type, not its name.",
        widget=forms.ClearableFileInput(attrs={"accept": ".png,.jpg,.jpeg,.dcm,.dicom,image/png,image/jpeg,application/dicom"}),
    )
    patient_id = forms.CharField(
        label="Patient ID (MRN)", max_length=64, required=False,
        help_text="Required unless the DICOM file carries it.",
    )
    accession_number = forms.CharField(
        max_length=64, required=False,
        help_text="Optional: generated when empty. An existing accession adds the image to that study.",
    )
    view = forms.ChoiceField(choices=[("", "Unknown / from DICOM")] + [
        c for c in Study.View.choices if c[0]], required=False)
    priority = forms.TypedChoiceField(
        choices=Study.Priority.choices, coerce=int, initial=Study.Priority.ROUTINE, required=False,
        empty_value=Study.Priority.ROUTINE,
    )
    patient_name = forms.CharField(max_length=200, required=False)
    patient_sex = forms.ChoiceField(
        label="Sex", choices=[("", "Unknown")] + [c for c in Patient.Sex.choices if c[0]],
        required=False,
    )
    patient_birth_date = forms.DateField(
        label="Birth date", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, api: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.api = api

    def clean_image(self):
        f = self.cleaned_data["image"]
        limit = settings.CXR_MAX_UPLOAD_BYTES
        if f.size > limit:
            raise forms.ValidationError(
                f"The file is {_mb(f.size)}; the upload limit is {_mb(limit)}.", code="too_large"
            )
        return f

    def clean_view(self):
        return (self.cleaned_data.get("view") or "").upper()

    def error_text(self) -> str:
        parts = []
        for field, errors in self.errors.items():
            label = field if self.api or field not in self.fields else self.fields[field].label
            for e in errors:
                parts.append(e if field == "__all__" else f"{label or field}: {e}")
        return " ".join(parts)

    def upload_kwargs(self) -> dict:
        f = self.cleaned_data["image"]
        f.seek(0)
        return {
            "data": f.read(),
            "filename": f.name or "",
            "patient_id": self.cleaned_data.get("patient_id") or "",
            "accession_number": self.cleaned_data.get("accession_number") or "",
            "view": self.cleaned_data.get("view") or "",
            "priority": self.cleaned_data.get("priority") or Study.Priority.ROUTINE,
            "patient_name": self.cleaned_data.get("patient_name") or "",
            "patient_sex": self.cleaned_data.get("patient_sex") or "",
            "patient_birth_date": self.cleaned_data.get("patient_birth_date"),
        }
