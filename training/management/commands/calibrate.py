from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from training.management.lookup import by_name_or_id, figure
from training.models import Dataset, ModelCalibration, ModelVersion
from training.services import (
    CalibrationRejected,
    calibration_activate,
    calibration_execute,
    calibration_request,
)


class Command(BaseCommand):
    help = (
        "Refit a model version's temperature, per-class thresholds and OOD reference at this site, "
        "on a registered dataset's split or on the signed readings of the last N studies read "
        "against it. Stored as a new calibration of the same weights; --activate makes it the "
        "one new predictions use. Example: manage.py calibrate resnet18-v2 --dataset site-val "
        "--split all --activate"
    )

    def add_arguments(self, parser):
        parser.add_argument("version", help="model version name or id")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--dataset", help="a registered dataset's name or id")
        source.add_argument(
            "--readings",
            type=int,
            metavar="N",
            help="the signed readings of the last N studies read against the version",
        )
        parser.add_argument(
            "--split",
            default="val",
            choices=["val", "test", "all"],
            help="the dataset's split (all: every image; a dataset the model never saw)",
        )
        parser.add_argument(
            "--target-sensitivity",
            type=float,
            default=None,
            help="the share of each class's images its threshold keeps flagged "
            "(default CXR_TARGET_SENSITIVITY)",
        )
        parser.add_argument(
            "--activate", action="store_true", help="make it the version's active calibration"
        )

    def handle(self, *args, version, dataset, readings, split, target_sensitivity, activate, **kw):
        v = by_name_or_id(ModelVersion, version)
        d = by_name_or_id(Dataset, dataset) if dataset else None
        target = (
            settings.CXR_TARGET_SENSITIVITY if target_sensitivity is None else target_sensitivity
        )
        try:
            calibration = calibration_request(
                version=v,
                dataset=d,
                split=split,
                readings=readings,
                target_sensitivity=target,
                enqueue=False,
            )
        except CalibrationRejected as exc:
            raise CommandError(str(exc)) from exc
        done = calibration_execute(calibration_id=calibration.pk)
        assert done is not None  # created queued just above: nothing else can have claimed it
        if done.status != ModelCalibration.Status.DONE:
            raise CommandError(f"Calibration {done.number} of {v.name} failed: {done.error}")
        self._report(v, done)
        if activate:
            calibration_activate(calibration=done)
            self.stdout.write(
                self.style.SUCCESS(f"Calibration {done.number} is now active for {v.name}.")
            )
        else:
            self.stdout.write(
                "Not active: activate it on the model page, or re-run with --activate."
            )

    def _report(self, version: ModelVersion, c: ModelCalibration) -> None:
        before, after = c.metrics.get("before", {}), c.metrics.get("after", {})
        self.stdout.write(
            self.style.SUCCESS(
                f"Calibration {c.number} of {version.name} on {c.source} (n={c.n_images}): "
                f"temperature {before.get('temperature', 1.0):.3f} -> {c.temperature:.3f}, "
                f"ECE {figure(before.get('ece'))} -> {figure(after.get('ece'))}, NLL "
                f"{figure(before.get('nll'))} -> {figure(after.get('nll'))}, OOD threshold "
                f"{figure(c.ood_threshold)}"
            )
        )
        for name, t in c.thresholds.items():
            was = (before.get("per_class") or {}).get(name, {})
            now = (after.get("per_class") or {}).get(name, {})
            self.stdout.write(
                f"  {name}: threshold {t:.3f}, sensitivity {figure(was.get('sensitivity'))} -> "
                f"{figure(now.get('sensitivity'))}, specificity {figure(was.get('specificity'))} -> "
                f"{figure(now.get('specificity'))}"
            )
        for note in c.metrics.get("notes", []):
            self.stdout.write(f"  note: {note}")
