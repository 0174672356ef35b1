from __future__ import annotations

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

    def handle(self, *args, name, path, seed, val, test, **options):
        try:
            dataset = dataset_register(
                name=name, root=path, seed=seed, val_fraction=val, test_fraction=test
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
