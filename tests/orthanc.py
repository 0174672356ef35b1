"""A private Orthanc (the real PACS of the tests): its own temporary folder, free HTTP and DICOM
ports, the DICOMweb plugin, and a modality entry for the app's C-STORE SCP.

scripts/test.sh installs Debian's `orthanc` and `orthanc-dicomweb`; the fixtures in
tests/pacs/conftest.py start one per test session. Plain Python (urllib, no Django), so that any
test package can use it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORTHANC_BIN = os.environ.get("CXR_TEST_ORTHANC", shutil.which("Orthanc") or "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = os.environ.get(
    "CXR_TEST_ORTHANC_DICOMWEB", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
)
ORTHANC_AET = "ORTHANC"
# The modality name under which Orthanc knows the app's SCP (REST /modalities/cxr/store).
APP_MODALITY = "cxr"


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OrthancError(Exception):
    """Orthanc did not start, or answered a request with an error."""


@dataclass
class Orthanc:
    """A running Orthanc: ``url`` (REST, no authentication), ``dicom_port`` and ``aet``.

    ``app_aet``/``app_port`` name the app's SCP as Orthanc's modality ``cxr``; the test that
    starts the SCP uses that port. ``dicomweb`` is the DICOMweb root (QIDO-RS, WADO-RS, STOW-RS).
    """

    folder: Path
    http_port: int
    dicom_port: int
    app_aet: str
    app_port: int
    aet: str = ORTHANC_AET
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log_file(self) -> Path:
        return self.folder / "orthanc.log"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "cxr-test-orthanc",
            "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            # Any calling AE may store and query (the app's SCU has its own AE title).
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowMove": True,
            "DicomCheckCalledAet": False,
            "DicomModalities": {APP_MODALITY: [self.app_aet, "127.0.0.1", self.app_port]},
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "StableAge": 1,
            "SaveJobs": False,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
        }

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> None:
        if not os.path.exists(ORTHANC_BIN):
            raise OrthancError(
                f"Orthanc not found at {ORTHANC_BIN}: install Debian's `orthanc` and "
                "`orthanc-dicomweb` (scripts/test.sh does)."
            )
        (self.folder / "db").mkdir(parents=True, exist_ok=True)
        config_file = self.folder / "orthanc.json"
        config_file.write_text(json.dumps(self.config(), indent=2))
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [ORTHANC_BIN, "--verbose", str(config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OrthancError(
                    f"Orthanc exited ({self.process.returncode}); see {self.log_file}:\n"
                    + self.log_tail()
                )
            try:
                self.get("/system")
                return
            except (OSError, OrthancError):
                time.sleep(0.2)
        self.stop()
        raise OrthancError(f"Orthanc did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # ---- REST ---------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float = 60,
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; a 4xx/5xx answer is returned, not raised."""
        url = path if path.startswith("http") else self.url + path
        req = urllib.request.Request(url, data=body, method=method)
        req.add_header("Accept", accept)
        if body is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get(self, path: str, **kw: Any) -> Any:
        status, _, body = self.request("GET", path, **kw)
        if status >= 400:
            raise OrthancError(f"GET {path}: {status} {body[:500]!r}")
        return json.loads(body) if body else None

    def post(self, path: str, payload: Any = None, *, data: bytes | None = None, **kw: Any) -> Any:
        body = data if data is not None else json.dumps(payload).encode()
        status, _, answer = self.request("POST", path, body, **kw)
        if status >= 400:
            raise OrthancError(f"POST {path}: {status} {answer[:500]!r}")
        return json.loads(answer) if answer else None

    def upload(self, dicom: bytes) -> dict[str, Any]:
        """Stores a DICOM file in Orthanc (REST /instances): its answer (ID, ParentStudy...)."""
        return self.post("/instances", data=dicom, content_type="application/dicom")

    def send_to_app(self, resources: list[str], *, timeout: float = 60) -> Any:
        """Orthanc C-STOREs the given resources (Orthanc ids of studies/series/instances) to the
        app's SCP (REST /modalities/cxr/store, synchronous): raises OrthancError on failure."""
        return self.post(
            f"/modalities/{APP_MODALITY}/store",
            {"Resources": resources, "Synchronous": True, "Timeout": int(timeout)},
            timeout=timeout + 10,
        )

    def point_app_modality(self, *, port: int, aet: str = "", host: str = "127.0.0.1") -> None:
        """Points modality ``cxr`` at an SCP started after Orthanc (REST PUT /modalities/cxr)."""
        self.app_port, self.app_aet = port, aet or self.app_aet
        status, _, body = self.request(
            "PUT",
            f"/modalities/{APP_MODALITY}",
            json.dumps({"AET": self.app_aet, "Host": host, "Port": port}).encode(),
        )
        if status >= 400:
            raise OrthancError(f"PUT /modalities/{APP_MODALITY}: {status} {body[:500]!r}")

    def studies(self) -> list[str]:
        return self.get("/studies")

    def qido_studies(self, **query: str) -> list[dict[str, Any]]:
        """QIDO-RS /studies with the given attribute filters (keyword=value)."""
        from urllib.parse import urlencode

        return self.get(
            "/dicom-web/studies" + (f"?{urlencode(query)}" if query else ""),
            accept="application/dicom+json",
        )

    def clear(self) -> None:
        """Deletes every patient (and so every study and instance) Orthanc holds."""
        for patient in self.get("/patients"):
            self.request("DELETE", f"/patients/{patient}")
