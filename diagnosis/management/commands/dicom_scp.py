from __future__ import annotations

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from diagnosis.dicom_scp import serve


class Command(BaseCommand):
    help = (
        "Run the DICOM C-STORE SCP: modalities and the PACS send chest CR/DX instances here "
        "(CXR_DICOM_HOST, CXR_DICOM_PORT, CXR_DICOM_AE_TITLE, CXR_DICOM_ALLOWED_CALLING_AES). "
        "scripts/run.sh starts it beside the web server and the workers."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="", help="default: CXR_DICOM_HOST")
        parser.add_argument("--port", type=int, default=0, help="default: CXR_DICOM_PORT")
        parser.add_argument("--ae-title", default="", help="default: CXR_DICOM_AE_TITLE")

    def handle(self, *args, host: str, port: int, ae_title: str, **options):
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: stop.set())
        self.stdout.write(
            f"DICOM SCP {ae_title or settings.CXR_DICOM_AE_TITLE} on "
            f"{host or settings.CXR_DICOM_HOST}:{port or settings.CXR_DICOM_PORT}",
        )
        self.stdout.flush()
        serve(host=host, port=port, ae_title=ae_title, stop=stop)
