"""The app's C-STORE SCP as a real process (`manage.py dicom_scp`) on the test database, and a
pynetdicom SCU to send to it; instances of one study built with pydicom (tests/imagegen.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (
    DigitalXRayImageStorageForPresentation,
    SecondaryCaptureImageStorage,
    Verification,
)

from tests import imagegen
from tests.orthanc import free_port

REPO = Path(__file__).resolve().parents[2]
APP_AET = "CXRTRIAGE"


def instance(
    *,
    study_uid: str = "",
    seed: int = 0,
    sop_class: str = "",
    **fields: object,
) -> Dataset:
    """A chest DX instance (imagegen.dicom_bytes's fields), in the study ``study_uid`` when
    given; ``sop_class`` changes its SOP class (e.g. Secondary Capture)."""
    ds = pydicom.dcmread(BytesIO(imagegen.dicom_bytes(seed=seed, **fields)))  # type: ignore[arg-type]
    if study_uid:
        ds.StudyInstanceUID = study_uid
    if sop_class:
        ds.SOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPClassUID = sop_class
    return ds


def instance_bytes(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def new_study_uid() -> str:
    return generate_uid()


def database_url() -> str:
    """The URL of the database pytest-django set up (the test database), for a child process."""
    from django.db import connection

    d = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{d['NAME']}"
    return f"postgres://{d['USER']}:{d['PASSWORD']}@{d['HOST']}:{d['PORT']}/{d['NAME']}"


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@dataclass
class Sent:
    status: int
    comment: str


class ScpProcess:
    """`manage.py dicom_scp` on a free port (or the one given), logging to ``log``."""

    def __init__(self, *, media: Path, broker_url: str, log: Path, port: int = 0, **env: str):
        self.port = port or free_port()
        self.log = log
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "MEDIA_ROOT": str(media),
            "CELERY_BROKER_URL": broker_url,
            "CXR_DICOM_PORT": str(self.port),
            "CXR_DICOM_AE_TITLE": APP_AET,
            **env,
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> ScpProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "dicom_scp"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"dicom_scp exited:\n{self.log_tail()}"
            if _listening(self.port) and self.echo():
                return self
            time.sleep(0.3)
        raise AssertionError(f"dicom_scp did not answer C-ECHO:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def _associate(self, calling_aet: str = "TESTSCU", contexts: tuple[str, ...] = ()):
        ae = AE(ae_title=calling_aet)
        ae.add_requested_context(Verification)
        for sop_class in contexts or (
            DigitalXRayImageStorageForPresentation,
            SecondaryCaptureImageStorage,
        ):
            ae.add_requested_context(sop_class)
        return ae.associate("127.0.0.1", self.port, ae_title=APP_AET)

    def echo(self) -> bool:
        assoc = self._associate()
        if not assoc.is_established:
            return False
        status = assoc.send_c_echo()
        assoc.release()
        return bool(status) and status.Status == 0

    def send(self, *datasets: Dataset, calling_aet: str = "TESTSCU") -> list[Sent]:
        """C-STOREs the instances on one association: the status of each (AssertionError when
        the association is refused)."""
        contexts = tuple(dict.fromkeys(str(ds.SOPClassUID) for ds in datasets))
        assoc = self._associate(calling_aet, contexts)
        if not assoc.is_established:
            raise AssertionError(f"association refused (calling AE {calling_aet})")
        try:
            out = []
            for ds in datasets:
                status = assoc.send_c_store(ds)
                assert status, "no C-STORE response (the association dropped)"
                out.append(Sent(int(status.Status), str(status.get("ErrorComment", ""))))
            return out
        finally:
            assoc.release()


class WebProcess:
    """The web app under gunicorn (as `make run` serves it) on the test database, for clients
    such as Orthanc's DICOMweb one that send chunked bodies Django's test server cannot read."""

    def __init__(self, *, media: Path, broker_url: str, log: Path):
        self.port = free_port()
        self.log = log
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "MEDIA_ROOT": str(media),
            "CELERY_BROKER_URL": broker_url,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
        }
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> WebProcess:
        argv = [sys.executable, "-m", "gunicorn", "cxrweb.wsgi:application"]
        argv += ["--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--threads", "2"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"gunicorn exited:\n{self.log_tail()}"
            if _listening(self.port):
                return self
            time.sleep(0.3)
        raise AssertionError(f"gunicorn did not listen:\n{self.log_tail()}")

    stop = ScpProcess.stop
    log_tail = ScpProcess.log_tail
