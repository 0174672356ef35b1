"""The model registry. The ML code itself lives in training.ml (no Django there)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        PRODUCTION = "production", "Production"
        RETIRED = "retired", "Retired"

    # Not stored: what re-analysing the open studies queued, set by model_version_promote for
    # the caller to report (a diagnosis ReanalysisOutcome, or None).
    reanalysis: Any = None

    name = models.CharField(max_length=120, unique=True)
    architecture = models.CharField(max_length=40)
    class_labels = models.JSONField(
        help_text="Ordered class labels: output i of the model is class i."
    )
    input_size = models.PositiveIntegerField(default=224)
    mean = models.JSONField(default=list)
    std = models.JSONField(default=list)
    temperature = models.FloatField(default=1.0, help_text="Softmax temperature (calibration).")
    calibration_number = models.PositiveIntegerField(
        default=1, help_text="The active ModelCalibration: its values are the live fields here."
    )
    thresholds = models.JSONField(
        default=dict, blank=True, help_text="Operating threshold per class."
    )
    normal_classes = models.JSONField(
        null=True,
        blank=True,
        help_text='The classes that mean "no finding", e.g. ["NORMAL"]: any other class at or '
        "above its operating threshold flags a study. Empty: every class is a finding. Left "
        "blank, the classes named normal / no finding / healthy / negative.",
    )
    weights = models.FileField(upload_to="models/", max_length=255)
    sha256 = models.CharField(max_length=64)
    # The out-of-distribution reference (training/ml/ood.py): the training split's pooled
    # features and the validation split's threshold; its summary (method, threshold, ...) here.
    ood_reference = models.FileField(upload_to="models/ood/", blank=True, max_length=255)
    ood_summary = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.CANDIDATE)
    notes = models.TextField(blank=True)
    source = models.CharField(max_length=255, blank=True, help_text="Where the weights came from.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    promoted_at = models.DateTimeField(null=True, blank=True)
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    promotion_reason = models.TextField(blank=True)
    training_run = models.OneToOneField(
        "TrainingRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="model_version",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"],
                condition=Q(status="production"),
                name="one_production_model_version",
                violation_error_message="Only one model version can be in production.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.architecture}, {self.get_status_display().lower()})"

    def save(self, *args, **kwargs):
        if self.normal_classes is None:
            self.normal_classes = self.default_normal_classes(self.class_labels or [])
        super().save(*args, **kwargs)

    @property
    def is_production(self) -> bool:
        return self.status == self.Status.PRODUCTION

    # Class names that mean "nothing found", matched case-insensitively: the default of
    # `normal_classes` when a version is created without one.
    NORMAL_LABELS = ("normal", "no finding", "no_finding", "healthy", "negative")

    @classmethod
    def default_normal_classes(cls, class_labels) -> list[str]:
        """The classes of `class_labels` whose name says "normal" (see NORMAL_LABELS)."""
        return [c for c in class_labels if str(c).strip().lower() in cls.NORMAL_LABELS]

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        super().clean()
        if self.normal_classes is None:
            return
        if not isinstance(self.normal_classes, list) or not all(
            isinstance(c, str) for c in self.normal_classes
        ):
            raise ValidationError({"normal_classes": 'A list of class names, e.g. ["NORMAL"].'})
        wanted = {c.strip().lower() for c in self.normal_classes}
        known = {str(c).strip().lower() for c in self.class_labels or []}
        if wanted - known:
            raise ValidationError(
                {
                    "normal_classes": (
                        f"Not classes of this version: {', '.join(sorted(wanted - known))}. "
                        f"Choose among {', '.join(self.class_labels or [])}."
                    )
                }
            )

    def is_normal_label(self, label: str) -> bool:
        """Whether `label` is one of the version's normal classes (case-insensitive)."""
        normal = (
            self.normal_classes
            if self.normal_classes is not None
            else self.default_normal_classes(self.class_labels or [])
        )
        return label.strip().lower() in {str(c).strip().lower() for c in normal}

    def flags(self, label: str, probability: float) -> bool:
        """The triage rule: an abnormal class at or above its operating threshold flags."""
        return not self.is_normal_label(label) and probability >= self.threshold_for(label)

    def threshold_for(self, label: str) -> float:
        """The operating threshold of a class: stored with the version, else 0.5."""
        try:
            return float((self.thresholds or {}).get(label, 0.5))
        except (TypeError, ValueError):
            return 0.5

    def preprocessing_dict(self) -> dict:
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std)}


class ModelPromotion(models.Model):
    """History of production changes: who put which version into production, when and why."""

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="promotions"
    )
    previous_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(blank=True)
    # The promotion gate (training.services.validation): the external evaluations there were
    # when it was promoted, and why it was promoted without one.
    external_evaluations = models.JSONField(
        default=list,
        blank=True,
        help_text="the done evaluations on other data at promotion: dataset, split, n, figures",
    )
    override_reason = models.TextField(
        blank=True, help_text="why it was promoted without an external evaluation"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.model_version.name} promoted at {self.created_at:%Y-%m-%d %H:%M}"


class Dataset(models.Model):
    """A registered ImageFolder tree, with its scan and its stored, seeded split.

    The split is stored so that every run and every evaluation on this dataset uses the same
    test images.
    """

    class Status(models.TextChoices):
        SCANNING = "scanning", "Scanning"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=120, unique=True)
    root = models.CharField(max_length=500, help_text="Folder with one sub-folder per class.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SCANNING)
    error = models.TextField(blank=True)
    classes = models.JSONField(default=list, blank=True)
    class_counts = models.JSONField(default=dict, blank=True)
    scan = models.JSONField(default=dict, blank=True, help_text="training.ml.train.scan.FolderScan")
    unreadable = models.JSONField(default=list, blank=True)
    split = models.JSONField(default=dict, blank=True, help_text="train/val/test sample indices")
    split_seed = models.IntegerField(default=0)
    val_fraction = models.FloatField(default=0.15)
    test_fraction = models.FloatField(default=0.15)
    # What keeps a patient's images in one split (training.ml.train.patient_groups): the given
    # patterns or CSV rows, and what the stored split used.
    group_patterns = models.JSONField(
        default=list, blank=True, help_text="regexes with a named group 'patient'"
    )
    group_csv = models.JSONField(
        default=list, blank=True, help_text="[line, path, patient] rows of the groups CSV"
    )
    grouping = models.CharField(
        max_length=80,
        blank=True,
        help_text='what the split grouped by: "pattern", "csv", "dicom PatientID", or "" (none)',
    )
    group_stats = models.JSONField(
        default=dict,
        blank=True,
        help_text="per split: images, patients, images per patient; the file-name hint",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def split_patient_rows(self) -> list[dict[str, object]]:
        """Per split, in order: images, patients and images per patient, as the scan stored them."""
        splits = (self.group_stats or {}).get("splits") or {}
        return [
            {"split": name, **splits[name]} for name in ("train", "val", "test") if name in splits
        ]

    @property
    def name_hint(self) -> str:
        """Why the file names look like several images per patient, when no grouping was given."""
        return str((self.group_stats or {}).get("name_hint") or "")

    @property
    def size(self) -> int:
        return sum(self.class_counts.values()) if self.class_counts else 0

    def split_counts(self) -> dict[str, int]:
        return {name: len(idx) for name, idx in (self.split or {}).items()}


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Strategy(models.TextChoices):
        HEAD = "head", "Train the new head only (backbone frozen)"
        PARTIAL = "partial", "Unfreeze the last blocks"
        FULL = "full", "Fine-tune everything at a small learning rate"

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="runs")
    architecture = models.CharField(max_length=40)
    strategy = models.CharField(max_length=8, choices=Strategy.choices)
    weights = models.CharField(max_length=500, help_text="imagenet, none, or a weights file path")
    config = models.JSONField(default=dict, help_text="training.ml.train.TrainConfig")
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    error = models.TextField(blank=True)
    progress = models.JSONField(default=dict, blank=True)
    history = models.JSONField(default=list, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="FitResult.to_dict()")
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    plot_history = models.FileField(upload_to="training/", blank=True, max_length=255)
    plot_confusion = models.FileField(upload_to="training/", blank=True, max_length=255)
    plot_roc = models.FileField(upload_to="training/", blank=True, max_length=255)
    plot_reliability = models.FileField(upload_to="training/", blank=True, max_length=255)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"run {self.pk}: {self.architecture}/{self.strategy} on {self.dataset.name}"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED, self.Status.CANCELLED)

    @property
    def test_metrics(self) -> dict:
        return (self.result or {}).get("test_metrics") or {}

    @property
    def percent(self) -> int:
        p = self.progress or {}
        if self.status == self.Status.DONE:
            return 100
        epochs, epoch = p.get("epochs") or 0, p.get("epoch") or 0
        steps, step = p.get("steps") or 0, p.get("step") or 0
        if not epochs:
            return 0
        done = (max(epoch, 1) - 1 + (step / steps if steps else 0)) / epochs
        return max(0, min(99, int(done * 100)))


class Evaluation(models.Model):
    """The metrics of one model version on one split of one dataset."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="evaluations"
    )
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="evaluations")
    split = models.CharField(max_length=8, default="test", help_text="test, val, train or all")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    curves = models.JSONField(default=dict, blank=True)
    plot_confusion = models.FileField(upload_to="evaluations/", blank=True, max_length=255)
    plot_roc = models.FileField(upload_to="evaluations/", blank=True, max_length=255)
    plot_reliability = models.FileField(upload_to="evaluations/", blank=True, max_length=255)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.model_version.name} on {self.dataset.name}/{self.split}"


from training.calibration_models import ModelCalibration  # noqa: E402  (models Django finds here)

__all__ = [
    "Dataset",
    "Evaluation",
    "ModelCalibration",
    "ModelPromotion",
    "ModelVersion",
    "TrainingRun",
]
