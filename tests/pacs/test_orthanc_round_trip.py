"""Orthanc, the real PACS, pushes a study to the app's SCP; the real worker analyses it."""

from __future__ import annotations

import pytest

from diagnosis.models import Prediction, Study
from tests.conftest import wait_for
from tests.orthanc import Orthanc
from tests.pacs.scp import instance, instance_bytes, new_study_uid

pytestmark = pytest.mark.integration


def test_a_study_orthanc_sends_is_stored_and_its_predictions_finish(
    orthanc: Orthanc, scp, production_model, celery_worker
):
    orthanc.point_app_modality(port=scp.port)
    study_uid = new_study_uid()
    for seed, view in ((11, "PA"), (12, "LL")):
        ds = instance(study_uid=study_uid, seed=seed, patient_id="MRN-PACS", view=view)
        orthanc.upload(instance_bytes(ds))
    [orthanc_study] = orthanc.studies()

    orthanc.send_to_app([orthanc_study])  # REST /modalities/cxr/store: C-STORE to the SCP

    study = Study.objects.get(study_instance_uid=study_uid)
    assert study.patient.mrn == "MRN-PACS"
    assert study.images.count() == 2

    def finished():
        states = list(
            Prediction.objects.filter(image__study=study).values_list("status", flat=True)
        )
        return len(states) == 2 and all(s in ("done", "failed") for s in states) and states

    states = wait_for(finished, timeout=120, what="both predictions to finish")
    assert states == ["done", "done"], Prediction.objects.filter(image__study=study).values(
        "status", "error"
    )
    assert all(
        p.model_version_id == production_model.pk and p.probabilities
        for p in Prediction.objects.filter(image__study=study)
    )
