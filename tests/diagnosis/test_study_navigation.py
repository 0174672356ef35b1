"""The study page's next/previous study (worklist order) and an empty class heatmap's note."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from diagnosis import selectors, services
from diagnosis.models import ClassHeatmap, Study
from diagnosis.worker import compute
from diagnosis.worker.heatmaps import EMPTY_CAM_NOTE, class_heatmap_run
from diagnosis.worker.run import prediction_run
from tests import imagegen

pytestmark = pytest.mark.django_db


def _upload(user, mrn: str, **kw):
    return services.study_upload(uploaded_by=user, data=imagegen.png_bytes(), patient_id=mrn, **kw)


def test_neighbours_follow_the_worklist_selectors_order(rad_client, radiologist):
    for i, priority in enumerate(
        (Study.Priority.ROUTINE, Study.Priority.STAT, Study.Priority.URGENT)
    ):
        _upload(radiologist, f"N-{i}", priority=priority)
    order = list(selectors.worklist().values_list("pk", flat=True))
    assert order != sorted(order)  # STAT first: not the upload order
    first = rad_client.get(f"/studies/{order[0]}/neighbours/").json()
    assert first == {
        "previous": None,
        "next": f"/studies/{order[1]}/",
        "position": 1,
        "count": 3,
        "filtered": False,
    }
    middle = rad_client.get(f"/studies/{order[1]}/neighbours/").json()
    assert (middle["previous"], middle["next"]) == (
        f"/studies/{order[0]}/",
        f"/studies/{order[2]}/",
    )
    assert rad_client.get(f"/studies/{order[2]}/neighbours/").json()["next"] is None


def test_neighbours_follow_the_worklists_filters(rad_client, radiologist):
    """Filtered to one patient search, j skips the others; a study that leaves the filter (it is
    signed under "not reviewed") keeps its place, so j goes on to the next unread one."""
    for mrn in ("FLT-1", "OTHER-1", "FLT-2", "OTHER-2", "FLT-3"):
        _upload(radiologist, mrn, priority=Study.Priority.ROUTINE)
    order = list(selectors.worklist().values_list("pk", flat=True))
    flt = [pk for pk in order if Study.objects.get(pk=pk).patient.mrn.startswith("FLT")]
    assert len(flt) == 3 and flt != order[:3]
    got = rad_client.get(f"/studies/{flt[0]}/neighbours/?q=FLT").json()
    assert got["next"] == f"/studies/{flt[1]}/" and got["previous"] is None
    assert (got["position"], got["count"], got["filtered"]) == (1, 3, True)
    middle = rad_client.get(f"/studies/{flt[1]}/neighbours/?q=FLT").json()
    assert (middle["previous"], middle["next"]) == (f"/studies/{flt[0]}/", f"/studies/{flt[2]}/")

    other = next(pk for pk in order if pk not in flt)  # not in the filter: placed by order
    outside = rad_client.get(f"/studies/{other}/neighbours/?q=FLT").json()
    assert outside["position"] is None and outside["count"] == 3
    later = [pk for pk in order[order.index(other) + 1 :] if pk in flt]
    assert outside["next"] == (f"/studies/{later[0]}/" if later else None)


def test_a_bad_filter_is_ignored_not_an_error(rad_client, radiologist):
    study = _upload(radiologist, "BAD-F").study
    got = rad_client.get(f"/studies/{study.pk}/neighbours/?date_from=yesterday").json()
    assert got["position"] == 1 and got["filtered"] is False


def test_neighbours_of_an_unknown_study_are_a_404(rad_client):
    assert rad_client.get("/studies/999/neighbours/").status_code == 404


def test_neighbours_need_a_clinical_role(client, outsider, radiologist):
    study = _upload(radiologist, "N-X").study
    client.force_login(outsider)
    assert client.get(f"/studies/{study.pk}/neighbours/").status_code == 403


def test_the_study_page_carries_the_keys_and_their_help_line(rad_client, radiologist):
    study = _upload(radiologist, "N-P").study
    html = rad_client.get(f"/studies/{study.pk}/").content.decode()
    assert f'data-neighbours-url="/studies/{study.pk}/neighbours/"' in html
    assert "next / previous study in the worklist" in html


@pytest.fixture
def finished(radiologist, production_model):
    result = _upload(radiologist, "EMPTY-1")
    return prediction_run(prediction_id=result.prediction.pk)


def _run_with_cam(monkeypatch, heatmap, make_cam):
    real = compute.predictor_for

    class Predictor:  # the real model, with the class map replaced
        def __init__(self, predictor):
            self._p, self.preprocessing = predictor, predictor.preprocessing

        def predict(self, images, **kw):
            return [
                dataclasses.replace(r, cam=make_cam(r.cam)) for r in self._p.predict(images, **kw)
            ]

    monkeypatch.setattr(compute, "predictor_for", lambda v: Predictor(real(v)))
    return class_heatmap_run(heatmap_id=heatmap.pk)


def test_an_empty_class_heatmap_is_finished_with_a_note_the_page_shows(
    finished, monkeypatch, rad_client
):
    other = next(c for c in finished.model_version.class_labels if c != finished.cam_class)
    heatmap = services.class_heatmap_request(prediction=finished, class_label=other)
    done = _run_with_cam(monkeypatch, heatmap, np.zeros_like)
    assert done.status == ClassHeatmap.Status.DONE and done.file
    assert done.error == EMPTY_CAM_NOTE
    html = rad_client.get(f"/studies/{finished.image.study_id}/results/").content.decode()
    assert f"{other} (empty)" in html
    assert 'data-empty="The model&#x27;s attention for this class is empty' in html


def test_a_class_heatmap_with_attention_has_no_note(finished, monkeypatch):
    other = next(c for c in finished.model_version.class_labels if c != finished.cam_class)
    heatmap = services.class_heatmap_request(prediction=finished, class_label=other)

    def peak(cam):
        out = np.zeros_like(cam)
        out[0, 0] = 1.0
        return out

    done = _run_with_cam(monkeypatch, heatmap, peak)
    assert done.status == ClassHeatmap.Status.DONE and done.error == ""
