"""The C-STORE SCP (`manage.py dicom_scp`): modalities and the PACS push chest radiographs here.

Verification (C-ECHO) and the storage SOP classes of chest radiographs: CR, DX for presentation
and for processing, Secondary Capture. Each instance goes through
``diagnosis.services.dicom_in.dicom_instance_store`` (the upload's validation and storage) and is
committed before the success status goes back, so an association that drops loses nothing it
acknowledged. A refused or bad instance gets a failure status with an error comment, nothing is
stored, and the refusal is an audit event naming the calling AE and the peer address.

pynetdicom runs each association in its own thread, with its own database connection, closed
when the association ends.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    Verification,
)

from diagnosis.audit import audit_dicom_received, audit_dicom_refused
from diagnosis.services.dicom_in import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    dicom_instance_store,
    dicom_service_user,
    error_comment,
    failure_status,
)
from diagnosis.services.uploads import StorageUnavailable
from training.ml.imaging import UploadRejected

logger = logging.getLogger(__name__)

STORAGE_CLASSES = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
)
# What the decoder reads (pydicom with the pylibjpeg plugins); an instance it cannot decode
# after all is refused with 0xC000, nothing stored.
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]

SUCCESS = 0x0000


def _status(code: int, comment: str = "") -> Dataset:
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = error_comment(comment)
    return status


def _origin(event: evt.Event) -> dict[str, str]:
    requestor = event.assoc.requestor
    return {
        "via": "dicom",
        "calling_ae": str(requestor.ae_title).strip()[:16],
        "peer": f"{requestor.address}:{requestor.port}"[:64],
    }


class StoreHandler:
    """Handles EVT_C_STORE (one instance: stored and committed, or refused)."""

    def __call__(self, event: evt.Event) -> Dataset:
        close_old_connections()
        origin = _origin(event)
        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        user = None
        try:
            user = dicom_service_user()  # looked up each time: an admin may have changed it
            stored = dicom_instance_store(
                data=event.encoded_dataset(include_meta=True), uploaded_by=user, filename=sop_uid
            )
        except UploadRejected as exc:
            logger.warning(
                "C-STORE refused from %s (%s): %s %s",
                origin["calling_ae"],
                origin["peer"],
                exc.code,
                exc,
            )
            audit_dicom_refused(None, exc, user=user, origin=origin, sop_instance_uid=sop_uid)
            return _status(failure_status(exc), f"{exc.code}: {exc}")
        except (StorageUnavailable, DatabaseError) as exc:
            logger.error("C-STORE of %s not stored: %s", sop_uid, exc)
            return _status(OUT_OF_RESOURCES, "Not stored (storage or database); send it again")
        except Exception as exc:  # noqa: BLE001 - the sender gets a status, never a dropped line
            logger.exception("C-STORE of %s failed", sop_uid)
            return _status(CANNOT_UNDERSTAND, f"Not stored: {type(exc).__name__}")
        audit_dicom_received(None, stored, user=user, origin=origin)
        logger.info(
            "C-STORE from %s (%s): %s -> study %s image %s%s",
            origin["calling_ae"],
            origin["peer"],
            sop_uid,
            stored.image.study_id,
            stored.image.pk,
            " (already stored)" if stored.duplicate else "",
        )
        return _status(SUCCESS)


def _close_connection(event: evt.Event) -> None:
    connection.close()  # this association's thread is ending


def build_ae(*, ae_title: str, allowed_calling_aes: list[str]) -> AE:
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Verification)
    for sop_class in STORAGE_CLASSES:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    # Empty: any calling AE; else only those (others are rejected at association).
    ae.require_calling_aet = allowed_calling_aes
    ae.maximum_associations = 16
    return ae


def handlers() -> list:
    return [
        (evt.EVT_C_STORE, StoreHandler()),
        (evt.EVT_C_ECHO, lambda event: SUCCESS),
        (evt.EVT_RELEASED, _close_connection),
        (evt.EVT_ABORTED, _close_connection),
    ]


def serve(*, host: str = "", port: int = 0, ae_title: str = "", stop: threading.Event) -> None:
    """Listens until ``stop`` is set (the command sets it on SIGTERM/SIGINT)."""
    host = host or settings.CXR_DICOM_HOST
    port = port or settings.CXR_DICOM_PORT
    ae_title = ae_title or settings.CXR_DICOM_AE_TITLE
    ae = build_ae(ae_title=ae_title, allowed_calling_aes=settings.CXR_DICOM_ALLOWED_CALLING_AES)
    server = ae.start_server((host, port), block=False, evt_handlers=handlers())
    allowed = ", ".join(settings.CXR_DICOM_ALLOWED_CALLING_AES) or "any"
    logger.info(
        "DICOM C-STORE SCP %s listening on %s:%d (calling AEs: %s)", ae_title, host, port, allowed
    )
    try:
        stop.wait()
    finally:
        server.shutdown()
