from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from training.models import Dataset
from training.services import DatasetRejected, dataset_register


class Command(BaseCommand):
    help = (
        "Register a folder in ImageFolder layout (one sub-folder per class; PNG, JPEG or "
        "DICOM) as a dataset: every file is decoded once, unreadable files are listed, and a "
        "stratified, seeded train/validation/test split is stored."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("path")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--val", type=float, default=0.15, help="validation fraction")
        parser.add_argument("--test", type=float, default=0.15, help="test fraction")
        grouping = parser.add_mutually_exclusive_group()
        grouping.add_argument(
            "--group-pattern",
            action="append",
            default=[],
            dest="group_patterns",
            metavar="REGEX",
            help=(
                "a regex with a named group 'patient', searched in each image's path relative "
                r"to the folder, e.g. 'person(?P<patient>\d+)_'; a patient's images stay in one "
                "split. Repeat it for several naming schemes; images that match none are their "
                "own patient."
            ),
        )
        grouping.add_argument(
            "--groups",
            metavar="FILE.csv",
            help="a CSV of path,patient (header optional; paths relative to the folder)",
        )

    def handle(self, *args, name, path, seed, val, test, group_patterns, groups, **options):
        try:
            groups_csv = Path(groups).read_text(encoding="utf-8-sig") if groups else None
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read the groups CSV {groups}: {exc}") from exc
        try:
            dataset = dataset_register(
                name=name,
                root=path,
                seed=seed,
                val_fraction=val,
                test_fraction=test,
                group_patterns=group_patterns,
                groups_csv=groups_csv,
            )
        except DatasetRejected as exc:
            raise CommandError(str(exc)) from exc
        if dataset.status != Dataset.Status.READY:
            raise CommandError(f"Dataset {name!r} could not be read: {dataset.error}")
        counts = ", ".join(f"{c} {n}" for c, n in dataset.class_counts.items())
        split = ", ".join(f"{k} {v}" for k, v in dataset.split_counts().items())
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered dataset {name!r} (id {dataset.pk}): {dataset.size} images ({counts}); "
                f"split {split}."
            )
        )
        self._write_groups(dataset)
        if dataset.unreadable:
            self.stdout.write(
                self.style.WARNING(f"{len(dataset.unreadable)} unreadable file(s), left out:")
            )
            for rel, reason in dataset.unreadable[:50]:
                self.stdout.write(f"  {rel}: {reason}")
        outside = (dataset.scan or {}).get("outside", [])
        if outside:
            self.stdout.write(
                self.style.WARNING(
                    f"{len(outside)} link(s) leading outside the dataset folder, not followed:"
                )
            )
            for rel in outside[:50]:
                self.stdout.write(f"  {rel}")

    def _write_groups(self, dataset: Dataset) -> None:
        for row in dataset.split_patient_rows:
            self.stdout.write(
                f"  {row['split']}: {row['images']} images, {row['patients']} patients "
                f"({row['images_per_patient_mean']} images per patient, at most "
                f"{row['images_per_patient_max']})"
            )
        if dataset.grouping:
            unmatched = (dataset.group_stats or {}).get("unmatched") or 0
            self.stdout.write(
                f"Grouped by {dataset.grouping}; {unmatched} image(s) matched no patient."
            )
        elif dataset.name_hint:
            self.stdout.write(self.style.WARNING(dataset.name_hint))
