"""Forms of the training pages. Torch-free: the choices come from training.ml.train.config, which
the training service also validates with, never from the torch modules of training.ml."""

from __future__ import annotations

from typing import Any

from django import forms

from training.ml.train.config import ARCHITECTURE_NAMES, DEFAULT_LR
from training.ml.train.patient_groups import (
    GroupingError,
    compile_patient_patterns,
    parse_groups_csv,
)
from training.models import Dataset, ModelVersion

ARCHITECTURES: tuple[str, ...] = ARCHITECTURE_NAMES

#: A groups CSV uploaded through the form (one short line per image: ~1 million images).
GROUPS_CSV_MAX_BYTES = 64 * 2**20

STRATEGY_CHOICES = [
    (
        "head",
        "Head only: train the new classifier, backbone frozen. Fast; a good first run "
        f"(default learning rate {DEFAULT_LR['head']:g}).",
    ),
    (
        "partial",
        "Partial: also unfreeze the last backbone blocks, so the deepest features adapt "
        f"to X-rays (default learning rate {DEFAULT_LR['partial']:g}).",
    ),
    (
        "full",
        "Full: fine-tune every layer at a small learning rate; needs the most images and "
        f"time (default learning rate {DEFAULT_LR['full']:g}).",
    ),
]

WEIGHTS_CHOICES = [
    ("imagenet", "ImageNet (torchvision's pretrained weights)"),
    ("none", "None: random initialisation"),
    ("file", "A backbone weights file on the training workers"),
]

IMBALANCE_CHOICES = [
    ("weighted_loss", "Weighted loss: rare classes count more in the loss"),
    ("sampler", "Balanced sampler: rare classes are drawn more often"),
    ("none", "None: train on the classes as they come"),
]

SPLIT_CHOICES = [
    ("test", "Test split (held out from training)"),
    ("val", "Validation split"),
    ("all", "All images"),
]


def ready_datasets():
    return Dataset.objects.filter(status=Dataset.Status.READY).defer("scan").order_by("name")


class DatasetChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Dataset) -> str:
        return f"{obj.name} ({obj.size} images, {len(obj.classes)} classes)"


class DatasetRegisterForm(forms.Form):
    name = forms.CharField(max_length=120, help_text="A short unique name, e.g. kermany-2018.")
    root = forms.CharField(
        label="Folder",
        max_length=500,
        help_text="The folder with one sub-folder per class, as the training workers see it.",
    )
    seed = forms.IntegerField(
        label="Split seed",
        min_value=0,
        initial=0,
        help_text="The same seed on the same folder gives the same train/validation/test split.",
    )
    val_fraction = forms.FloatField(
        label="Validation fraction",
        min_value=0.01,
        max_value=0.49,
        initial=0.15,
        widget=forms.NumberInput(attrs={"step": "0.01"}),
    )
    test_fraction = forms.FloatField(
        label="Test fraction",
        min_value=0.01,
        max_value=0.49,
        initial=0.15,
        widget=forms.NumberInput(attrs={"step": "0.01"}),
    )
    group_patterns = forms.CharField(
        label="Patient group patterns",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "class": "mono"}),
        help_text=(
            "One regex per line with a group named patient, searched in each image's path "
            r"inside the folder, e.g. person(?P<patient>\d+)_ and (?P<patient>IM-\d+)-. A "
            "patient's images then stay in one split; images that match no line are their own "
            "patient. DICOM files are grouped by their PatientID without it."
        ),
    )
    groups_csv = forms.FileField(
        label="Or a patient groups CSV",
        required=False,
        help_text="Rows of path,patient (a header is optional), paths relative to the folder.",
    )

    def clean_group_patterns(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["group_patterns"].splitlines()]
        patterns = [line for line in lines if line]
        try:
            compile_patient_patterns(patterns)
        except GroupingError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return patterns

    def clean_groups_csv(self) -> str | None:
        upload = self.cleaned_data["groups_csv"]
        if upload is None:
            return None
        if upload.size > GROUPS_CSV_MAX_BYTES:
            raise forms.ValidationError(
                f"The groups CSV is over {GROUPS_CSV_MAX_BYTES // 2**20} MB: register the folder "
                "with manage.py register_dataset --groups instead."
            )
        try:
            text = upload.read().decode("utf-8-sig")
            parse_groups_csv(text)
        except UnicodeDecodeError as exc:
            raise forms.ValidationError("The groups CSV must be UTF-8 text.") from exc
        except GroupingError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return text

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("group_patterns") and cleaned.get("groups_csv"):
            raise forms.ValidationError("Give patient group patterns or a groups CSV, not both.")
        return cleaned


class TrainingRunForm(forms.Form):
    """The fields of training.ml.train.config.TrainConfig a person chooses; the service validates the
    whole configuration again (TrainingRejected)."""

    dataset = DatasetChoiceField(queryset=Dataset.objects.none(), empty_label=None)
    architecture = forms.ChoiceField(choices=[(a, a) for a in ARCHITECTURES], initial="resnet18")
    weights = forms.ChoiceField(
        label="Starting weights",
        choices=WEIGHTS_CHOICES,
        initial="imagenet",
        widget=forms.RadioSelect,
    )
    weights_path = forms.CharField(
        label="Weights file path",
        max_length=500,
        required=False,
        help_text="Only with “a backbone weights file”: a state dict of the same architecture "
        "(e.g. a CXR-pretrained backbone), as the training workers see it.",
    )
    strategy = forms.ChoiceField(
        label="Fine-tuning strategy",
        choices=STRATEGY_CHOICES,
        initial="head",
        widget=forms.RadioSelect,
    )
    epochs = forms.IntegerField(min_value=1, max_value=500, initial=10)
    batch_size = forms.IntegerField(label="Batch size", min_value=1, max_value=1024, initial=16)
    lr = forms.FloatField(
        label="Learning rate",
        required=False,
        min_value=1e-7,
        max_value=1.0,
        widget=forms.NumberInput(attrs={"step": "any", "placeholder": "strategy default"}),
        help_text="Blank: the strategy's default (head 0.001, partial 0.0003, full 0.0001).",
    )
    warmup_head_epochs = forms.IntegerField(
        label="Warm-up head epochs (full only)",
        min_value=0,
        initial=0,
        help_text="Full fine-tuning: train the new head alone first, so its random weights do "
        "not disturb the pretrained backbone. Fewer than the epochs.",
    )
    unfreeze_blocks = forms.IntegerField(
        label="Blocks to unfreeze (partial only)",
        min_value=1,
        max_value=20,
        initial=2,
        help_text="Partial: how many of the last backbone blocks train (ResNet: layer4 is one).",
    )
    imbalance = forms.ChoiceField(
        label="Class imbalance", choices=IMBALANCE_CHOICES, initial="weighted_loss"
    )
    hflip = forms.BooleanField(
        label="Horizontal flips",
        required=False,
        initial=False,
        help_text="Off by default: the heart is on the left, and a flipped chest is not a "
        "normal chest.",
    )
    gamma = forms.FloatField(
        label="Gamma jitter",
        required=False,
        min_value=0.0,
        max_value=1.0,
        widget=forms.NumberInput(attrs={"step": "any", "placeholder": "0.25"}),
        help_text="Exposure-curve augmentation: gray ** g, g within 1/(1+x) to 1+x. Blank: 0.25; "
        "0: off.",
    )
    label_smoothing = forms.FloatField(
        label="Label smoothing",
        required=False,
        min_value=0.0,
        max_value=0.5,
        widget=forms.NumberInput(attrs={"step": "any", "placeholder": "0.1"}),
        help_text="Blank: 0.1. Softer targets: less over-confident on unfamiliar images.",
    )
    tta = forms.BooleanField(
        label="Test-time augmentation",
        required=False,
        initial=False,
        help_text="Calibrate and test on the average of 4 mild views: 4x the evaluation time.",
    )
    early_stopping_patience = forms.IntegerField(
        label="Early-stopping patience",
        min_value=0,
        max_value=100,
        initial=3,
        help_text="Stop after this many epochs without a better validation loss; 0 = never.",
    )
    max_steps_per_epoch = forms.IntegerField(
        label="Max steps per epoch",
        min_value=1,
        required=False,
        help_text="Blank: the whole training split every epoch. Set it for a quick trial run.",
    )
    seed = forms.IntegerField(min_value=0, initial=0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = ready_datasets()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("weights") == "file" and not (data.get("weights_path") or "").strip():
            self.add_error(
                "weights_path", "Give the path of the weights file, or choose ImageNet or none."
            )
        strategy = data.get("strategy")
        if data.get("warmup_head_epochs") and strategy and strategy != "full":
            self.add_error(
                "warmup_head_epochs",
                "Warm-up head epochs only apply to full fine-tuning: set 0, or "
                "choose the full strategy.",
            )
        return data

    def config(self) -> dict[str, Any]:
        """The TrainConfig dict (training.ml.train.config.TrainConfig.from_dict) for the service."""
        d = self.cleaned_data
        weights = {"imagenet": "imagenet", "none": None}.get(
            d["weights"], (d["weights_path"] or "").strip()
        )
        return {
            "arch": d["architecture"],
            "weights": weights,
            "strategy": d["strategy"],
            "epochs": d["epochs"],
            "batch_size": d["batch_size"],
            "lr": d["lr"],
            "warmup_head_epochs": d["warmup_head_epochs"] if d["strategy"] == "full" else 0,
            "unfreeze_blocks": d["unfreeze_blocks"],
            "imbalance": d["imbalance"],
            "hflip": d["hflip"],
            "early_stopping_patience": d["early_stopping_patience"] or None,
            "max_steps_per_epoch": d["max_steps_per_epoch"],
            "seed": d["seed"],
            "tta": bool(d.get("tta")),
            # Blank: the recipe's defaults (TrainConfig).
            **{name: d[name] for name in ("gamma", "label_smoothing") if d.get(name) is not None},
        }


class EvaluationForm(forms.Form):
    dataset = DatasetChoiceField(queryset=Dataset.objects.none(), empty_label=None)
    split = forms.ChoiceField(choices=SPLIT_CHOICES, initial="test")
    # As evaluate_model --skip-unknown-classes: an external dataset often has classes the model
    # was never trained on (a "Tuberculosis" folder for a NORMAL/PNEUMONIA model).
    skip_unknown_classes = forms.BooleanField(
        required=False,
        label="Leave out classes the model lacks",
        help_text="Images of dataset classes the model does not know are left out (and listed "
        "with the result); without this, such a dataset fails.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = ready_datasets()


class PromoteForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why this version should read the next studies (kept in the promotion history "
        "and the audit trail).",
        error_messages={"required": "Give a reason: it is kept in the promotion history."},
    )
    # Asked for only when the version has no external evaluation (the promotion gate).
    override_reason = forms.CharField(
        required=False,
        max_length=2000,
        strip=True,
        label="Override: why promote it without an external evaluation",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Kept in the promotion history and the audit trail.",
    )
    rerun_open = forms.BooleanField(
        required=False,
        label="Re-run open (unsigned) studies with this version",
        help_text="Their earlier results are kept as history; the re-runs wait behind new uploads.",
    )


class CompareForm(forms.Form):
    candidate = forms.ModelChoiceField(
        queryset=ModelVersion.objects.all(),
        empty_label=None,
        label="Candidate version",
    )
    dataset = DatasetChoiceField(queryset=Dataset.objects.none(), empty_label=None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = ready_datasets()
