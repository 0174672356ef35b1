from __future__ import annotations

from django import forms
from django.conf import settings
from django.utils import timezone

from diagnosis import identity
from diagnosis.models import Patient, Study
from diagnosis.results import UNRELIABLE_LABEL


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


class PatientTextField(forms.CharField):
    """Refuses control and invisible characters anywhere, the ends included (a CharField's strip
    would hide a trailing line break), then trims spaces; the length is checked after the trim."""

    def __init__(self, *, identifier: bool = True, **kwargs) -> None:
        super().__init__(strip=False, **kwargs)
        self.identifier = identifier

    def to_python(self, value):
        value = super().to_python(value)
        ch = identity.forbidden_character(value, identifier=self.identifier)
        if ch is not None:
            raise forms.ValidationError(
                f"The value {identity.control_character_problem(ch)}", code="control_character"
            )
        return value.strip(" ")


def plausible_birth_date(value):
    """The date, unless it is in the future or before 1900 (a ValidationError then)."""
    problem = identity.birth_date_problem(value, today=timezone.localdate())
    if problem is not None:
        raise forms.ValidationError(f"The birth date {problem}", code="bad_birth_date")
    return value


class PatientAdminForm(forms.ModelForm):
    """The Django admin's patient form, under the upload's rules for IDs, names and birth dates."""

    mrn = PatientTextField(label="Patient ID (MRN)", max_length=64)
    name = PatientTextField(max_length=200, required=False, identifier=False)

    class Meta:
        model = Patient
        fields = ["mrn", "name", "sex", "birth_date"]

    def clean_birth_date(self):
        return plausible_birth_date(self.cleaned_data.get("birth_date"))


class StudyUploadForm(forms.Form):
    image = forms.FileField(
        label="Chest X-ray",
        help_text="PNG, JPEG or DICOM. The file's content decides its type, not its name.",
        widget=forms.ClearableFileInput(
            attrs={"accept": ".png,.jpg,.jpeg,.dcm,.dicom,image/png,image/jpeg,application/dicom"}
        ),
    )
    patient_id = PatientTextField(
        label="Patient ID (MRN)",
        max_length=64,
        required=False,
        help_text="Required unless the DICOM file carries it.",
    )
    accession_number = PatientTextField(
        max_length=64,
        required=False,
        help_text="Optional: generated when empty. An existing accession adds the image to that study.",
    )
    view = forms.ChoiceField(
        choices=[("", "Unknown / from DICOM")] + [c for c in Study.View.choices if c[0]],
        required=False,
    )
    priority = forms.TypedChoiceField(
        choices=Study.Priority.choices,
        coerce=int,
        initial=Study.Priority.ROUTINE,
        required=False,
        empty_value=Study.Priority.ROUTINE,
    )
    patient_name = PatientTextField(max_length=200, required=False, identifier=False)
    patient_sex = forms.ChoiceField(
        label="Sex",
        choices=[("", "Unknown")] + [c for c in Patient.Sex.choices if c[0]],
        required=False,
    )
    patient_birth_date = forms.DateField(
        label="Birth date", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    confirm_identity = forms.BooleanField(
        label="This is the same patient",
        required=False,
        help_text="The image joins the patient on record; the recorded details stay as they are.",
    )
    # Set by the page's script on every file after the first of a batch: the accession number
    # the first one got, used when a file has none of its own (see study_upload).
    batch_accession = PatientTextField(max_length=64, required=False, widget=forms.HiddenInput)

    def __init__(self, *args, api: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.api = api

    def clean_image(self):
        f = self.cleaned_data["image"]
        limit = settings.CXR_MAX_UPLOAD_BYTES
        for each in self.image_files() or [f]:
            if each.size > limit:
                name = f"{each.name} is" if len(self.image_files()) > 1 else "The file is"
                raise forms.ValidationError(
                    f"{name} {_mb(each.size)}; the upload limit is {_mb(limit)}.",
                    code="too_large",
                )
        return f

    def image_files(self) -> list:
        """Every file sent as `image` (several when sent together: one study)."""
        return self.files.getlist(self.add_prefix("image")) if self.files else []

    def upload_files(self):
        """(data, filename) for each file sent, read one at a time (for study_upload_many)."""
        for f in self.image_files():
            f.seek(0)
            yield f.read(), f.name or ""

    def clean_patient_birth_date(self):
        return plausible_birth_date(self.cleaned_data.get("patient_birth_date"))

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
            "confirm_identity": bool(self.cleaned_data.get("confirm_identity")),
            "batch_accession": self.cleaned_data.get("batch_accession") or "",
        }


class WorklistFilterForm(forms.Form):
    q = forms.CharField(
        label="Search",
        required=False,
        max_length=100,
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": "Patient ID, name or accession"}
        ),
    )
    status = forms.ChoiceField(
        required=False,
        choices=[
            ("", "Any status"),
            ("waiting", "Waiting for model"),
            ("queued", "Queued"),
            ("running", "Running"),
            ("done", "Done"),
            ("failed", "Failed"),
        ],
    )
    finding = forms.ChoiceField(required=False, choices=[("", "Any finding")])
    reviewed = forms.ChoiceField(
        required=False,
        choices=[("", "Reviewed or not"), ("no", "Not reviewed"), ("yes", "Reviewed")],
    )
    date_from = forms.DateField(
        label="Uploaded from", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label="to", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, findings: list[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["finding"].choices = [
            ("", "Any finding"),
            ("flagged", "Flagged abnormal"),
            ("unreliable", "Unreliable (unlike the training data)"),
        ] + [(f, f) for f in findings if f != UNRELIABLE_LABEL]


class ReadingForm(forms.Form):
    decision = forms.ChoiceField(
        choices=[("agree", "Agree with the model"), ("override", "Override")],
        widget=forms.RadioSelect,
        initial="agree",
    )
    final_label = forms.ChoiceField(label="Final label", required=False)
    notes = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}), required=False, max_length=5000
    )
    amends = forms.IntegerField(required=False, widget=forms.HiddenInput)
    # The predictions of the study result the page showed: signing is refused when they changed.
    prediction_ids = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(
        self,
        *args,
        classes: list[str] = (),
        has_result: bool = True,
        unreliable: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        # Unlike the training data: no "agree" to click (a normal top class is not even shown);
        # the radiologist chooses the final label. reading_sign refuses "agree" there too.
        self.agree_withheld = unreliable and has_result
        if self.agree_withheld:
            decision = self.fields["decision"]
            decision.choices = [("override", "Choose the final label")]
            decision.initial = "override"
            decision.error_messages["invalid_choice"] = (
                "The model's result for this study is unreliable (unlike its training data), so "
                "there is nothing to agree with: choose the final label yourself."
            )
            self.fields["final_label"].label = "Final label"
        self.fields["final_label"].choices = (
            [("", "—")] + [(c, c) for c in classes] + [("other", "other (describe in the notes)")]
        )
        if not has_result:
            self.fields["decision"].choices = [("override", "Read without a model result")]
            self.fields["decision"].initial = "override"

    def clean_prediction_ids(self) -> list[int]:
        text = self.cleaned_data.get("prediction_ids") or ""
        try:
            return [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise forms.ValidationError(
                "Reload the page: the shown result is unreadable.", code="invalid"
            ) from None

    def clean(self):
        data = super().clean()
        if data.get("decision") == "override" and not data.get("final_label"):
            self.add_error(
                "final_label",
                "Choose the final label."
                if self.agree_withheld
                else "Choose the final label when you override the model.",
            )
        return data


class AuditFilterForm(forms.Form):
    user = forms.CharField(required=False, max_length=150)
    action = forms.ChoiceField(required=False, choices=[("", "Any action")])
    patient = forms.CharField(label="Patient ID", required=False, max_length=64)
    date_from = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from cxrweb.audit.models import AuditEvent

        self.fields["action"].choices = [("", "Any action"), *AuditEvent.Action.choices]


class _StudyIds(forms.Field):
    """The studies ticked on the export page: ``study`` repeated, each a positive id."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value):
        try:
            return sorted({int(v) for v in (value or [])})
        except (TypeError, ValueError) as exc:
            raise forms.ValidationError("Select studies from the list.") from exc


class ExportForm(forms.Form):
    name = forms.CharField(
        max_length=120,
        required=False,
        help_text="Names the folder and the training dataset, e.g. site-2026-12.",
    )
    signed_from = forms.DateField(
        label="Read from", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    signed_to = forms.DateField(
        label="Read until", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    study = _StudyIds(required=False)
