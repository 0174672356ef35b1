"""Results back out to the PACS (issue #25 item 2), against a real Orthanc, Redis, PostgreSQL and
Celery worker: a finished study's SR and Secondary Capture are built by the app, sent by STOW-RS
or C-STORE, found in Orthanc by QIDO-RS with the right references, and read back with pydicom."""

from __future__ import annotations

import io

import pydicom
import pytest
from django.core.management import call_command
from django.db import transaction
from rest_framework.test import APIClient

from diagnosis import services
from diagnosis.models import PacsExport, Prediction, Study
from diagnosis.pacs.build import NOTICE
from tests import imagegen
from tests.conftest import wait_for
from tests.diagnosis.conftest import finish_prediction
from tests.orthanc import Orthanc, free_port

pytestmark = pytest.mark.django_db(transaction=True)

SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def _upload(user, data: bytes, accession: str, **kw) -> Study:
    result = services.study_upload(
        uploaded_by=user, data=data, patient_id=kw.pop("patient_id", "MRN-PACS"),
        accession_number=accession, **kw,
    )  # fmt: skip
    return result.study


def _all_sent(study: Study, count: int) -> list[PacsExport]:
    def sent():
        rows = list(study.pacs_exports.all())
        failed = [r for r in rows if r.status == PacsExport.Status.FAILED]
        assert not failed, [r.last_error for r in failed]
        return rows if len(rows) == count and all(r.status == "sent" for r in rows) else None

    return wait_for(sent, timeout=120, what=f"{count} objects sent to the PACS")


def _series(orthanc: Orthanc, study_uid: str, modality: str) -> list[dict]:
    return orthanc.get(
        f"/dicom-web/studies/{study_uid}/series?Modality={modality}",
        accept="application/dicom+json",
    ) or []  # fmt: skip


def _instance(orthanc: Orthanc, sop_uid: str) -> pydicom.Dataset:
    """The stored instance, fetched from Orthanc and read back with pydicom."""
    found = orthanc.post("/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}})
    assert len(found) == 1, f"Orthanc holds {len(found)} instances {sop_uid}"
    _, _, body = orthanc.request("GET", f"/instances/{found[0]}/file", accept="*/*")
    return pydicom.dcmread(io.BytesIO(body))


def _texts(ds: pydicom.Dataset) -> list[str]:
    """Every TEXT value of an SR's content tree, depth first."""
    out = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "TEXT":
            out.append(str(item.TextValue))
        out += _texts(item)
    return out


def _nums(ds: pydicom.Dataset) -> list[tuple[str, float]]:
    out = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "NUM":
            out.append(
                (
                    item.ConceptNameCodeSequence[0].CodeMeaning,
                    float(item.MeasuredValueSequence[0].NumericValue),
                )
            )
        out += _nums(item)
    return out


def _evidence_uids(sr: pydicom.Dataset) -> set[str]:
    return {
        sop.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }


def test_a_finished_png_study_goes_to_the_pacs_by_stow_rs_as_sr_and_sc(
    orthanc, settings, production_model, celery_worker, radiologist
):
    settings.CXR_PACS_URL = orthanc.dicomweb
    settings.CXR_PACS_SEND_ON = "both"
    study = _upload(radiologist, imagegen.png_bytes(seed=3), "ACC-STOW", patient_name="Doe, Jane")
    prediction = Prediction.objects.get(image__study=study)
    wait_for(
        lambda: Prediction.objects.get(pk=prediction.pk).status == "done", what="the prediction"
    )
    sc_row, sr_row = sorted(_all_sent(study, 2), key=lambda r: r.kind)
    study.refresh_from_db()
    assert study.study_instance_uid, "a PNG study gets a generated StudyInstanceUID"

    sr_series = _series(orthanc, study.study_instance_uid, "SR")
    assert len(sr_series) == 1
    assert sr_series[0]["0020000E"]["Value"] == [sr_row.series_instance_uid]
    sr = _instance(orthanc, sr_row.sop_instance_uid)
    sc = _instance(orthanc, sc_row.sop_instance_uid)
    assert sr.StudyInstanceUID == sc.StudyInstanceUID == study.study_instance_uid
    assert sc.SOPClassUID == SC_CLASS and sc.PatientID == "MRN-PACS"
    assert sc.Rows > 0 and sc.SamplesPerPixel == 3
    assert sc_row.sop_instance_uid in _evidence_uids(sr)
    texts = _texts(sr)
    prediction.refresh_from_db()
    assert NOTICE in texts
    assert production_model.name in texts
    assert "done" in texts
    assert any(t.startswith(f"Model result: {prediction.label}") for t in texts)
    probabilities = dict(n for n in _nums(sr) if n[0] == "Probability")
    assert len([n for n in _nums(sr) if n[0] == "Probability"]) == len(prediction.probabilities)
    assert max(prediction.probabilities.values()) == pytest.approx(
        max(probabilities.values()), abs=1e-6
    )

    # The API's study shows what was sent.
    api = APIClient()
    api.force_authenticate(radiologist)
    body = api.get(f"/api/v1/studies/{study.pk}/").json()
    assert {(e["kind"], e["status"]) for e in body["pacs_exports"]} == {
        ("sr", "sent"),
        ("sc", "sent"),
    }
    assert {e["study_instance_uid"] for e in body["pacs_exports"]} == {study.study_instance_uid}

    # A signed reading sends its own SR (and SC) with the radiologist's label, in the same study.
    reading = services.reading_sign(study=study, radiologist=radiologist, final_label="covid19")
    rows = _all_sent(study, 4)
    reading_sr = next(r for r in rows if r.reading_id == reading.pk and r.kind == "sr")
    sr2 = _instance(orthanc, reading_sr.sop_instance_uid)
    assert sr2.StudyInstanceUID == study.study_instance_uid
    assert "covid19" in _texts(sr2) and sr2.VerificationFlag == "VERIFIED"
    assert len(_series(orthanc, study.study_instance_uid, "SR")) == 2


def test_a_dicom_study_goes_by_c_store_into_its_source_study(
    orthanc, settings, production_model, celery_worker, radiologist
):
    settings.CXR_PACS_URL = ""
    settings.CXR_PACS_AE = f"127.0.0.1:{orthanc.dicom_port}:{orthanc.aet}"
    data = imagegen.dicom_bytes(patient_id="MRN-DCM", accession="ACC-DCM", seed=5)
    source = pydicom.dcmread(io.BytesIO(data))
    study = _upload(radiologist, data, "ACC-DCM", patient_id="MRN-DCM")
    assert study.study_instance_uid == source.StudyInstanceUID
    sc_row, sr_row = sorted(_all_sent(study, 2), key=lambda r: r.kind)
    assert len(_series(orthanc, source.StudyInstanceUID, "SR")) == 1
    sr = _instance(orthanc, sr_row.sop_instance_uid)
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == "MRN-DCM" and str(sr.PatientName) == str(source.PatientName)
    # The SR cites the source instance and the capture as its evidence.
    assert {source.SOPInstanceUID, sc_row.sop_instance_uid} <= _evidence_uids(sr)


def test_a_pacs_that_is_down_shows_retrying_then_failed_and_loses_nothing(
    orthanc, settings, pneumonia_model, celery_worker, radiologist
):
    settings.CXR_PACS_URL = f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens
    settings.CXR_PACS_MAX_ATTEMPTS = 3
    settings.CXR_PACS_RETRY_S = 0.5
    study = _upload(radiologist, imagegen.png_bytes(seed=7), "ACC-DOWN")
    prediction = Prediction.objects.get(image__study=study)
    with transaction.atomic():
        finish_prediction(prediction, pneumonia_model, {"NORMAL": 0.2, "PNEUMONIA": 0.8})
        services.pacs_exports_for_result(study_id=study.pk)

    def failed():
        rows = list(study.pacs_exports.all())
        return rows if rows and all(r.status == "failed" for r in rows) else None

    rows = wait_for(failed, timeout=60, what="both exports to fail")
    assert {r.attempts for r in rows} == {3}
    assert all("could not be reached" in r.last_error for r in rows)
    assert "Failed: STOW-RS" in rows[0].status_text

    # The PACS is back: sending again delivers the same instances.
    settings.CXR_PACS_URL = orthanc.dicomweb
    out = io.StringIO()
    call_command("pacs_resend", study=study.pk, stdout=out)
    assert "2 object(s) queued" in out.getvalue()
    sent = _all_sent(study, 2)
    assert {r.sop_instance_uid for r in sent} == {r.sop_instance_uid for r in rows}
    sr = _instance(orthanc, next(r for r in sent if r.kind == "sr").sop_instance_uid)
    assert "Model result: PNEUMONIA (flagged: PNEUMONIA)" in _texts(sr)


def test_a_failed_analysis_is_sent_with_an_sr_that_says_so(
    orthanc, settings, pneumonia_model, celery_worker, radiologist
):
    from diagnosis.worker.finish import prediction_fail

    settings.CXR_PACS_URL = orthanc.dicomweb
    study = _upload(radiologist, imagegen.png_bytes(seed=9), "ACC-FAIL")
    prediction = Prediction.objects.get(image__study=study)
    Prediction.objects.filter(pk=prediction.pk).update(model_version=pneumonia_model)
    with transaction.atomic():
        prediction_fail(prediction, "The image could not be decoded.")
    sc_row, sr_row = sorted(_all_sent(study, 2), key=lambda r: r.kind)
    sr = _instance(orthanc, sr_row.sop_instance_uid)
    texts = _texts(sr)
    assert any(t.startswith("FAILED:") and "could not be decoded" in t for t in texts)
    assert not any(t.startswith("Model result") for t in texts)
    sc = _instance(orthanc, sc_row.sop_instance_uid)
    assert "analysis failed" in sc.SeriesDescription


def test_nothing_is_made_while_a_view_is_still_running_or_sending_is_off(
    settings, pneumonia_model, radiologist, sent_tasks
):
    settings.CXR_PACS_URL = "http://127.0.0.1:9/dicom-web"
    first = _upload(radiologist, imagegen.png_bytes(seed=1), "ACC-TWO")
    services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(seed=2), patient_id="MRN-PACS",
        accession_number="ACC-TWO",
    )  # fmt: skip
    one, two = Prediction.objects.filter(image__study=first).order_by("pk")
    finish_prediction(one, pneumonia_model, {"NORMAL": 0.9, "PNEUMONIA": 0.1})
    assert services.pacs_exports_for_result(study_id=first.pk) == []
    finish_prediction(two, pneumonia_model, {"NORMAL": 0.9, "PNEUMONIA": 0.1})
    made = services.pacs_exports_for_result(study_id=first.pk)
    assert sorted(e.kind for e in made) == ["sc", "sr"]
    assert services.pacs_exports_for_result(study_id=first.pk) == []  # once per result
    settings.CXR_PACS_URL = ""
    settings.CXR_PACS_SEND_ON = "result"
    reading = services.reading_sign(study=first, radiologist=radiologist, final_label="NORMAL")
    assert not reading.pacs_exports.exists()


def test_a_refusal_fails_at_once_without_retries(
    orthanc, settings, pneumonia_model, celery_worker, radiologist
):
    settings.CXR_PACS_URL = f"{orthanc.url}/no-dicomweb-here"  # Orthanc answers 404
    study = _upload(radiologist, imagegen.png_bytes(seed=12), "ACC-404")
    prediction = Prediction.objects.get(image__study=study)
    with transaction.atomic():
        finish_prediction(prediction, pneumonia_model, {"NORMAL": 0.6, "PNEUMONIA": 0.4})
        services.pacs_exports_for_result(study_id=study.pk)

    def failed():
        rows = list(study.pacs_exports.all())
        return rows if rows and all(r.status == "failed" for r in rows) else None

    rows = wait_for(failed, timeout=60, what="both exports refused")
    assert {r.attempts for r in rows} == {1}
    assert all("HTTP 404" in r.last_error and "check CXR_PACS_URL" in r.last_error for r in rows)


def test_the_reconciler_sends_again_an_export_whose_message_was_lost(
    settings, pneumonia_model, radiologist, sent_tasks
):
    import datetime as dt

    from django.utils import timezone

    from diagnosis.dispatch import SEND_TO_PACS, pacs_exports_reconcile

    settings.CXR_PACS_URL = "http://127.0.0.1:9/dicom-web"
    study = _upload(radiologist, imagegen.png_bytes(seed=13), "ACC-LOST")
    finish_prediction(Prediction.objects.get(image__study=study), pneumonia_model, {"NORMAL": 1.0})
    made = services.pacs_exports_for_result(study_id=study.pk)
    assert [t.name for t in sent_tasks if t.name == SEND_TO_PACS] == [SEND_TO_PACS] * 2
    sent_tasks.clear()
    assert pacs_exports_reconcile() == 0  # recent: its message may still be on its way
    long_ago = timezone.now() - dt.timedelta(hours=3)
    PacsExport.objects.filter(pk=made[0].pk).update(created_at=long_ago)
    assert pacs_exports_reconcile() == 1
    assert sent_tasks[0].name == SEND_TO_PACS and sent_tasks[0].args == (made[0].pk,)


def test_a_view_the_reconciler_failed_gets_its_sr_at_the_next_reconcile(
    settings, pneumonia_model, radiologist, sent_tasks
):
    from django.utils import timezone

    from diagnosis.dispatch import SEND_TO_PACS
    from diagnosis.tasks import reconcile_predictions

    settings.CXR_PACS_URL = "http://127.0.0.1:9/dicom-web"
    study = _upload(radiologist, imagegen.png_bytes(seed=14), "ACC-RECON")
    # As the reconciler fails a prediction that was sent too often (dispatch._fail_or_send_again).
    Prediction.objects.filter(image__study=study).update(
        model_version=pneumonia_model, status="failed", finished_at=timezone.now(), error="lost"
    )
    counts = reconcile_predictions()
    assert counts["pacs_made"] == 2
    assert sorted(study.pacs_exports.values_list("kind", flat=True)) == ["sc", "sr"]
    assert [t.name for t in sent_tasks].count(SEND_TO_PACS) == 2
    assert reconcile_predictions()["pacs_made"] == 0  # once


def test_a_reading_signed_without_a_model_result_says_there_was_none(
    settings, radiologist, sent_tasks
):
    from diagnosis.worker.pacs import pacs_export_build

    settings.CXR_PACS_URL = "http://127.0.0.1:9/dicom-web"
    settings.CXR_PACS_SEND_ON = "reading"
    study = _upload(radiologist, imagegen.png_bytes(seed=15), "ACC-NOMODEL")
    reading = services.reading_sign(
        study=study, radiologist=radiologist, final_label="other", notes="Rib fracture."
    )
    sc_row = reading.pacs_exports.get(kind="sc")
    sr_row = reading.pacs_exports.get(kind="sr")
    sc = pacs_export_build(sc_row)
    assert sc.SeriesDescription == "CXR triage: no model result, X-ray only"
    texts = _texts(pacs_export_build(sr_row))
    assert "no model result" in texts and "other" in texts and "Rib fracture." in texts
    assert not any(t.startswith("FAILED") for t in texts)


@pytest.mark.integration
def test_a_study_orthanc_pushes_comes_back_into_it_as_sr_and_sc(
    orthanc, scp, settings, production_model, celery_worker
):
    """The issue's round trip: Orthanc C-STOREs a two-view study to the app's SCP, the worker
    analyses it, and the app C-STOREs the SR and SC back into the same study in Orthanc."""
    from tests.pacs.scp import instance, instance_bytes, new_study_uid

    settings.CXR_PACS_URL = ""
    settings.CXR_PACS_AE = f"127.0.0.1:{orthanc.dicom_port}:{orthanc.aet}"
    orthanc.point_app_modality(port=scp.port)
    study_uid = new_study_uid()
    sources = [
        instance(study_uid=study_uid, seed=seed, patient_id="MRN-TRIP", view=view)
        for seed, view in ((21, "PA"), (22, "LL"))
    ]
    for ds in sources:
        orthanc.upload(instance_bytes(ds))
    orthanc.send_to_app(orthanc.studies())

    study = Study.objects.get(study_instance_uid=study_uid)
    sc_row, sr_row = sorted(_all_sent(study, 2), key=lambda r: r.kind)
    [sr_series] = _series(orthanc, study_uid, "SR")
    assert sr_series["0020000E"]["Value"] == [sr_row.series_instance_uid]
    assert orthanc.studies() and len(orthanc.studies()) == 1  # back into the same study
    sr = _instance(orthanc, sr_row.sop_instance_uid)
    assert sr.StudyInstanceUID == study_uid and sr.PatientID == "MRN-TRIP"
    cited = _evidence_uids(sr)
    assert {ds.SOPInstanceUID for ds in sources} | {sc_row.sop_instance_uid} <= cited
    assert production_model.name in _texts(sr)
    assert _instance(orthanc, sc_row.sop_instance_uid).StudyInstanceUID == study_uid
