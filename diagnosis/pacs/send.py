"""Sending DICOM instances to the PACS: STOW-RS (DICOMweb) or C-STORE (pynetdicom). No Django.

Both raise :class:`SendFailed` with ``transient`` set when a retry may succeed (the PACS is
down, busy or timed out) and unset when it will not (the PACS refused the instance: fix the
configuration or the object first).
"""

from __future__ import annotations

import io
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

# HTTP answers that a later try may not get: the PACS (or its proxy) is busy or restarting.
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


class SendFailed(Exception):
    """The PACS did not store the instances; the message says why and what to check."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class AeTarget:
    """A C-STORE destination: host, port and the called AE title."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> AeTarget:
        """``host:port:AET`` (e.g. ``pacs.example.org:104:PACS``)."""
        parts = text.strip().rsplit(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2]:
            raise ValueError(
                f"CXR_PACS_AE must be host:port:AET (e.g. pacs.example.org:104:PACS), not {text!r}"
            )
        port = int(parts[1])
        if not 0 < port < 65536 or len(parts[2]) > 16:
            raise ValueError(
                f"CXR_PACS_AE {text!r}: the port must be 1-65535 and the AE title at most 16 "
                "characters."
            )
        return cls(parts[0], port, parts[2])


def _encoded(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def stow_rs(base_url: str, instances: Sequence[Dataset], *, timeout: float) -> None:
    """POST `instances` to ``{base_url}/studies`` as multipart/related application/dicom."""
    boundary = f"cxr-{uuid.uuid4().hex}"
    body = io.BytesIO()
    for ds in instances:
        body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        body.write(_encoded(ds))
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    request = urllib.request.Request(
        base_url.rstrip("/") + "/studies",
        data=body.getvalue(),
        method="POST",
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        raise SendFailed(
            f"STOW-RS to {base_url} answered HTTP {exc.code}"
            + (f": {detail}" if detail else "")
            + ("" if exc.code in _TRANSIENT_HTTP else " (check CXR_PACS_URL and the PACS's log)"),
            transient=exc.code in _TRANSIENT_HTTP,
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SendFailed(
            f"STOW-RS to {base_url}: the PACS could not be reached ({reason})", transient=True
        ) from None


def c_store(
    target: AeTarget, instances: Sequence[Dataset], *, calling_ae: str, timeout: float
) -> None:
    """C-STORE `instances` to `target` in one association."""
    from pynetdicom import AE  # imported here: only a worker that sends needs it

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for ds in instances:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    where = f"{target.ae_title}@{target.host}:{target.port}"
    assoc = ae.associate(target.host, target.port, ae_title=target.ae_title)
    if not assoc.is_established:
        rejected = assoc.is_rejected
        raise SendFailed(
            f"C-STORE to {where}: association "
            + (
                "rejected (check the PACS knows our AE title and CXR_PACS_AE's called AE title)"
                if rejected
                else "failed: the PACS could not be reached"
            ),
            transient=not rejected,
        )
    try:
        for ds in instances:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise SendFailed(f"C-STORE to {where}: no answer (timed out)", transient=True)
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success and its warnings
                # 0xA7xx: out of resources: worth a retry; others are refusals.
                raise SendFailed(
                    f"C-STORE to {where}: status 0x{code:04X} for {ds.SOPInstanceUID}",
                    transient=(code & 0xFF00) == 0xA700,
                )
    finally:
        assoc.release()
