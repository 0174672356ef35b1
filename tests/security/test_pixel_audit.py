"""Every response that carries a patient's pixels or results is an audit event (issue #20, item 2).

The list of URLs comes from the URL resolver: a new diagnosis or API URL fails
`test_every_diagnosis_and_api_url_is_audited_or_exempt_with_a_reason` until it is placed in
AUDITED (and walked by the test below it) or in EXEMPT with the reason it shows no patient data.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from cxrweb.audit.models import AuditEvent
from diagnosis import services
from diagnosis.worker.heatmaps import class_heatmap_run
from diagnosis.worker.run import prediction_run
from tests import imagegen

pytestmark = pytest.mark.django_db

MRN = "AUD-1"

# URL name -> (the object whose pk the URL takes, the object the event names). The objects are
# those of the `viewed` fixture; None: the URL takes no argument / the event names no one object.
AUDITED = {
    "diagnosis:worklist": (None, None),
    "diagnosis:worklist-rows": (None, None),
    "diagnosis:study": ("study", "study"),
    "diagnosis:study-reading": ("study", "study"),
    "diagnosis:study-results": ("study", "study"),
    "diagnosis:report": ("study", "study"),
    "diagnosis:report-pdf": ("study", "study"),
    "diagnosis:image-display": ("image", "image"),
    "diagnosis:image-original": ("image", "image"),
    "diagnosis:prediction-heatmap-layer": ("prediction", "prediction"),
    "diagnosis:prediction-overlay": ("prediction", "prediction"),
    "diagnosis:class-heatmap": ("class_heatmap", "class_heatmap"),
    "api:study": ("study", "study"),
    "api:prediction": ("prediction", "prediction"),
    "api:prediction-overlay": ("prediction", "prediction"),
    "api:prediction-heatmap-layer": ("prediction", "prediction"),
    "api:deprecated-heatmap-png": ("prediction", "prediction"),
    "api:deprecated-cam-png": ("prediction", "prediction"),
}
EXEMPT = {
    "diagnosis:upload": "a blank form (an upload itself is an UPLOAD event)",
    "diagnosis:reading-sign": "POST only: the signed reading is a READING event",
    "diagnosis:prediction-rerun": "POST only: redirects to the (audited) study page",
    "diagnosis:study-reanalyse": "POST only: a REANALYSE event; redirects to the (audited) study "
    "page",
    "diagnosis:class-heatmap-request": "POST only: answers the heatmap's id and status",
    "diagnosis:pacs-export-resend": "POST only, admins: a PACS_RESENT event; redirects to the "
    "(audited) study page",
    "diagnosis:agreement": "counts per model version, no patient",
    "diagnosis:audit": "the audit trail itself, for admins; its CSV export is an EXPORT event",
    "diagnosis:study-neighbours": "the links to the studies before and after in the worklist: "
    "ids only; the study page they lead to is audited",
    "diagnosis:worklist-changes": "the live worklist's change token and a count of new studies: "
    "no patient; the rows it leads to are audited",
    "api:studies": "POST only: an upload, an UPLOAD event",
    "api:study-readings": "POST only: the signed reading is a READING event; a 409 that shows "
    "the current result is a VIEW_STUDY event",
    "api:dicom-peek": "reads back the header of the file the client sends; nothing stored",
    "diagnosis:exports": "admins only (this test's radiologist gets 403); its list is a "
    "VIEW_STUDY event naming every listed study and patient (tests/diagnosis/test_exports.py)",
    "api:prediction-states": "ids, status and server times of predictions: no patient, no "
    "result; the results themselves are read through the audited api:prediction",
    "api:schema": "the OpenAPI document: the API's shape, no patient",
    "api:docs": "the API's documentation page (Swagger UI): no patient",
}


def _url_names(resolver: URLResolver, namespace: str = "") -> set[str]:
    names = set()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}:{entry.namespace}" if namespace else entry.namespace or ""
            names |= _url_names(entry, inner.strip(":"))
        elif isinstance(entry, URLPattern) and entry.name:
            names.add(f"{namespace}:{entry.name}" if namespace else entry.name)
    return names


@pytest.fixture
def viewed(radiologist, production_model) -> dict:
    """A study with a finished prediction and a finished class heatmap, all of patient MRN."""
    result = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id=MRN
    )
    prediction = prediction_run(prediction_id=result.prediction.pk)
    label = next(c for c in production_model.class_labels if c != prediction.cam_class)
    heatmap = services.class_heatmap_request(prediction=prediction, class_label=label)
    heatmap = class_heatmap_run(heatmap_id=heatmap.pk)
    assert heatmap.file, heatmap.error
    return {
        "study": result.study,
        "image": result.image,
        "prediction": prediction,
        "class_heatmap": heatmap,
    }


def _get(client, path: str):
    response = client.get(path)
    if response.streaming:  # read a file to its end (the test client then closes it)
        b"".join(response.streaming_content)
    return response


def test_every_diagnosis_and_api_url_is_audited_or_exempt_with_a_reason():
    names = {n for n in _url_names(get_resolver()) if n.startswith(("diagnosis:", "api:"))}
    assert not AUDITED.keys() & EXEMPT.keys()
    assert names - AUDITED.keys() - EXEMPT.keys() == set(), (
        "a new URL: audit it if it shows a patient's pixels or results, else say why not"
    )
    assert AUDITED.keys() | EXEMPT.keys() <= names


def test_each_view_of_pixels_or_results_is_an_event_naming_user_patient_study_and_object(
    rad_client, radiologist, viewed
):
    """All URLs in one test: the fixture runs the model once, not once per URL."""
    wrong = {}
    for name, (takes, names) in sorted(AUDITED.items()):
        path = reverse(name, args=[viewed[takes].pk] if takes else [])
        before = set(AuditEvent.objects.values_list("pk", flat=True))
        status = _get(rad_client, path).status_code
        events = list(AuditEvent.objects.exclude(pk__in=before))
        if status != 200 or len(events) != 1:
            wrong[name] = f"HTTP {status}, {len(events)} events"
            continue
        problem = _event_problem(events[0], path, radiologist, viewed, names)
        if problem:
            wrong[name] = problem
    assert wrong == {}


def _event_problem(event: AuditEvent, path: str, user, viewed: dict, names: str | None) -> str:
    study = viewed["study"]
    if (event.user, event.username, event.path) != (user, user.username, path):
        return f"names {event.username!r} at {event.path!r}"
    if names is None:  # the worklist: every study and patient on the page
        ok = study.pk in event.detail["studies"] and MRN in event.detail["patients"]
        return "" if ok else f"lists {event.detail}"
    obj = viewed[names]
    if (event.object_type, event.object_id) != (type(obj).__name__, str(obj.pk)):
        return f"names {event.object_type} {event.object_id}"
    if event.patient_mrn != MRN or event.detail.get("study") != study.pk:
        return f"names patient {event.patient_mrn!r}, study {event.detail.get('study')}"
    if event.action not in {
        AuditEvent.Action.VIEW_STUDY,
        AuditEvent.Action.VIEW_IMAGE,
        AuditEvent.Action.DOWNLOAD,
        AuditEvent.Action.REPORT,
    }:
        return f"is a {event.action} event"
    return ""


def test_a_display_copy_identical_to_the_original_is_an_audited_view(rad_client, radiologist):
    """An 8-bit JPEG is its own display copy: fetching it is no way around the download's event."""
    result = services.study_upload(
        uploaded_by=radiologist, data=imagegen.jpeg_bytes(), patient_id="JPEG-1"
    )
    original = result.image.original.open("rb").read()
    response = rad_client.get(f"/images/{result.image.pk}/display.png")
    assert b"".join(response.streaming_content) == original
    event = AuditEvent.objects.get(action=AuditEvent.Action.VIEW_IMAGE)
    assert (event.patient_mrn, event.object_id, event.detail["view"]) == (
        "JPEG-1",
        str(result.image.pk),
        "display",
    )


@pytest.fixture
def uploaded(radiologist):
    """A study waiting for its model (enough for the image and the results panel)."""
    return services.study_upload(uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id=MRN)


def test_repeated_views_within_the_window_are_one_event_per_user_and_thing(
    client, rad_client, second_radiologist, uploaded, settings
):
    settings.CXR_AUDIT_VIEW_COALESCE_S = 300
    image, study = uploaded.image, uploaded.study
    for _ in range(3):
        _get(rad_client, f"/images/{image.pk}/display.png")
        _get(rad_client, f"/studies/{study.pk}/results/")
    client.force_login(second_radiologist)
    _get(client, f"/images/{image.pk}/display.png")

    displays = AuditEvent.objects.filter(detail__view="display")
    assert sorted(displays.values_list("username", flat=True)) == ["rad1", "rad2"]
    assert AuditEvent.objects.filter(detail__view="results").count() == 1


def test_a_view_after_the_window_is_a_new_event(rad_client, uploaded, settings):
    settings.CXR_AUDIT_VIEW_COALESCE_S = 1
    path = f"/images/{uploaded.image.pk}/display.png"
    _get(rad_client, path)
    _get(rad_client, path)
    assert AuditEvent.objects.filter(detail__view="display").count() == 1
    time.sleep(1.1)
    _get(rad_client, path)
    assert AuditEvent.objects.filter(detail__view="display").count() == 2


def test_without_a_window_every_view_is_an_event(rad_client, uploaded, settings):
    settings.CXR_AUDIT_VIEW_COALESCE_S = 0
    for _ in range(3):
        _get(rad_client, f"/studies/{uploaded.study.pk}/results/")
    assert AuditEvent.objects.filter(detail__view="results").count() == 3


def test_a_coalesced_results_poll_costs_one_small_query_and_writes_nothing(
    rad_client, uploaded, settings
):
    settings.CXR_AUDIT_VIEW_COALESCE_S = 300
    path = f"/studies/{uploaded.study.pk}/results/"
    _get(rad_client, path)
    with CaptureQueriesContext(connection) as queries:
        assert _get(rad_client, path).status_code == 200
    audit_sql = [q["sql"] for q in queries if "diagnosis_auditevent" in q["sql"]]
    assert len(audit_sql) == 1 and audit_sql[0].lstrip().upper().startswith("SELECT")
    assert AuditEvent.objects.filter(detail__view="results").count() == 1


def test_the_coalescing_window_must_be_a_whole_number_of_seconds_not_below_zero():
    from tests.conftest import run_python

    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.CXR_AUDIT_VIEW_COALESCE_S)"
    )
    env = {"DJANGO_SETTINGS_MODULE": "cxrweb.settings", "SECRET_KEY": "x"}
    assert run_python(code, env=env).stdout.strip() == "300"
    bad = run_python(code, env={**env, "CXR_AUDIT_VIEW_COALESCE_S": "-1"})
    assert bad.returncode != 0 and "CXR_AUDIT_VIEW_COALESCE_S must be 0 or" in bad.stderr
