"""Fixtures of the PACS tests: one private Orthanc for the session (tests/orthanc.py), emptied
before each test that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.diagnosis.conftest import PNEUMONIA_CLASSES, THRESHOLDS
from tests.orthanc import Orthanc, OrthancError, free_port
from tests.pacs.scp import ScpProcess, WebProcess
from training.models import ModelVersion

APP_AET = "CXRTRIAGE"


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory) -> Iterator[Orthanc]:
    """A running Orthanc on free ports, with DICOMweb, knowing the app's SCP as modality ``cxr``
    (AE CXRTRIAGE on 127.0.0.1 at ``orthanc_server.app_port``, a free port the SCP fixtures
    listen on). Stopped at the end of the session."""
    server = Orthanc(
        folder=tmp_path_factory.mktemp("orthanc"),
        http_port=free_port(),
        dicom_port=free_port(),
        app_aet=APP_AET,
        app_port=free_port(),
    )
    try:
        server.start()
    except OrthancError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def orthanc(orthanc_server: Orthanc) -> Orthanc:
    """The session's Orthanc, holding no study at the start of the test."""
    orthanc_server.clear()
    return orthanc_server


@pytest.fixture
def scp(transactional_db, settings, tmp_path) -> Iterator[ScpProcess]:
    """The app's C-STORE SCP as a real process (`manage.py dicom_scp`) on the test database,
    this test's MEDIA_ROOT and the test broker, on a free port."""
    from tests.conftest import TEST_BROKER_URL

    process = ScpProcess(
        media=settings.MEDIA_ROOT, broker_url=TEST_BROKER_URL, log=tmp_path / "dicom_scp.log"
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def web_app(transactional_db, settings, tmp_path) -> Iterator[WebProcess]:
    """The web app under gunicorn, on the test database and this test's MEDIA_ROOT."""
    from tests.conftest import TEST_BROKER_URL

    process = WebProcess(
        media=settings.MEDIA_ROOT, broker_url=TEST_BROKER_URL, log=tmp_path / "gunicorn.log"
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def pneumonia_model(db) -> ModelVersion:
    """A NORMAL/PNEUMONIA version row (tests/diagnosis/conftest.py's): results are written."""
    return ModelVersion.objects.create(
        name="pneu-v1", architecture="mobilenet_v2", class_labels=PNEUMONIA_CLASSES,
        thresholds=THRESHOLDS, weights="models/pneu-v1.pt", sha256="0" * 64,
        mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
    )  # fmt: skip


def pneumonia_study_to_pacs(radiologist, model: ModelVersion, *, seed: int, mrn: str, acc: str):
    """A one-view study whose result (PNEUMONIA 0.7) is finished and whose PACS exports are made
    (sent by the test's worker to whatever CXR_PACS_URL the test set)."""
    from django.db import transaction

    from diagnosis import services
    from diagnosis.models import Prediction
    from tests import imagegen
    from tests.diagnosis.conftest import finish_prediction

    study = services.study_upload(
        uploaded_by=radiologist,
        data=imagegen.png_bytes(seed=seed),
        patient_id=mrn,
        accession_number=acc,
    ).study
    prediction = Prediction.objects.get(image__study=study)
    with transaction.atomic():
        finish_prediction(prediction, model, {"NORMAL": 0.3, "PNEUMONIA": 0.7})
        services.pacs_exports_for_result(study_id=study.pk)
    return study
