"""The model page's "Recalibrate" form: a dataset's split, or the signed readings of the last N
studies, and the sensitivity each class's threshold keeps."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from training.forms import DatasetChoiceField, ready_datasets

CALIBRATION_SPLIT_CHOICES = [
    ("val", "Validation split"),
    ("test", "Test split"),
    ("all", "All images (a dataset the model never saw)"),
]


class CalibrationForm(forms.Form):
    source = forms.ChoiceField(
        choices=[("dataset", "A labelled dataset"), ("readings", "Signed readings")],
        initial="dataset",
        widget=forms.RadioSelect,
        label="Fit on",
    )
    dataset = DatasetChoiceField(queryset=None, required=False, empty_label="—")
    split = forms.ChoiceField(choices=CALIBRATION_SPLIT_CHOICES, initial="val", required=False)
    readings = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=100_000,
        initial=500,
        label="Last N studies",
        help_text="Signed readings of the last N studies read by this version.",
    )
    target_sensitivity = forms.FloatField(
        min_value=0.01,
        max_value=1.0,
        label="Target sensitivity",
        help_text="Each class's threshold keeps this share of its images flagged.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = ready_datasets()
        self.fields["target_sensitivity"].initial = settings.CXR_TARGET_SENSITIVITY

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("source") == "dataset" and not data.get("dataset"):
            self.add_error("dataset", "Choose the dataset to calibrate on.")
        if data.get("source") == "readings" and not data.get("readings"):
            self.add_error("readings", "Give how many recent studies to calibrate on.")
        return data
