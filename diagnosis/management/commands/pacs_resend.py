from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from diagnosis.models import PacsExport
from diagnosis.services import pacs_export_resend
from diagnosis.services.pacs import pacs_destination


class Command(BaseCommand):
    help = (
        "Send the DICOM objects that failed to reach the PACS again (after the PACS or "
        "CXR_PACS_URL / CXR_PACS_AE was fixed): all failed ones, or those of --study. The workers "
        "send them; the study page shows how it goes."
    )

    def add_arguments(self, parser):
        parser.add_argument("--study", type=int, help="only this study (its id)")

    def handle(self, *args, study=None, **options):
        if not pacs_destination():
            raise CommandError("Sending to the PACS is off: set CXR_PACS_URL or CXR_PACS_AE.")
        failed = PacsExport.objects.filter(status=PacsExport.Status.FAILED)
        if study is not None:
            failed = failed.filter(study_id=study)
        count = 0
        for export in failed:
            with transaction.atomic():
                pacs_export_resend(export=export)
            count += 1
        self.stdout.write(f"{count} object(s) queued to be sent again.")
