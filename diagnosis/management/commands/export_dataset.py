"""manage.py export_dataset: read studies -> a de-identified training dataset (see
diagnosis.services.exports)."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from diagnosis.services.exports import (
    ExportRejected,
    dataset_export_create,
    dataset_export_run,
    export_candidates,
)


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD).") from exc


class Command(BaseCommand):
    help = (
        "Export studies with signed readings as a de-identified training dataset (DICOM PS3.15 "
        "Basic Profile, pseudonymous patient keys, labels from the readings), written under "
        "CXR_EXPORT_ROOT and registered as a dataset grouped by patient. Runs here, not on a "
        "worker; the export is an audit event of the user given with --by."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the export's and the dataset's name, e.g. site-2026-12")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--studies", help="comma-separated study ids")
        which.add_argument(
            "--all-read", action="store_true", help="every study with a signed reading"
        )
        parser.add_argument("--signed-from", type=_date, help="with --all-read: readings since")
        parser.add_argument("--signed-to", type=_date, help="with --all-read: readings until")
        parser.add_argument("--by", required=True, help="the username the audit trail names")

    def handle(self, *args, name, studies, all_read, signed_from, signed_to, by, **options):
        user = get_user_model().objects.filter(username=by, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {by!r}.")
        if studies:
            try:
                ids = [int(s) for s in studies.split(",") if s.strip()]
            except ValueError as exc:
                raise CommandError("--studies takes study ids, e.g. 12,15,19.") from exc
        else:
            ids = [
                c.study.pk for c in export_candidates(signed_from=signed_from, signed_to=signed_to)
            ]
        try:
            export = dataset_export_create(name=name, study_ids=ids, actor=user, enqueue=False)
        except ExportRejected as exc:
            raise CommandError(str(exc)) from exc
        export = dataset_export_run(export_id=export.pk) or export
        export.refresh_from_db()
        for item in export.excluded:
            self.stderr.write(f"left out {item['key']}: {item['reason']}")
        if export.status != export.Status.DONE:
            raise CommandError(export.error)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(export.class_counts.items()))
        self.stdout.write(
            f"Exported {export.images} images of {export.studies_exported} studies "
            f"({export.patients} patients; {counts}) to {export.folder}; registered as dataset "
            f"{export.dataset.name!r} (grouped by patient key)."
        )
