"""The model registry. The ML code itself lives in training.ml (no Django there)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        PRODUCTION = "production", "Production"
        RETIRED = "retired", "Retired"

    name = models.CharField(max_length=120, unique=True)
    architecture = models.CharField(max_length=40)
    class_labels = models.JSONField(help_text="Ordered class labels: output i of the model is class i.")
    input_size = models.PositiveIntegerField(default=224)
    mean = models.JSONField(default=list)
    std = models.JSONField(default=list)
    temperature = models.FloatField(default=1.0, help_text="Softmax temperature (calibration).")
    thresholds = models.JSONField(default=dict, blank=True, help_text="Operating threshold per class.")
    weights = models.FileField(upload_to="models/", max_length=255)
    sha256 = models.CharField(max_length=64)
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

    @property
    def is_production(self) -> bool:
        return self.status == self.Status.PRODUCTION

    NORMAL_LABELS = ("normal", "no finding", "no_finding", "healthy", "negative")

    def is_normal_label(self, label: str) -> bool:
        return label.strip().lower() in self.NORMAL_LABELS

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

    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="promotions")
    previous_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.model_version.name} promoted at {self.created_at:%Y-%m-%d %H:%M}"
