"""The Django admin shows patient data too: its record pages and lists are audit events.

Each test walks every model at once: the fixture runs the model, once per test."""

from __future__ import annotations

import pytest

from cxrweb.audit.models import AuditEvent
from tests.security.test_pixel_audit import MRN, viewed  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db

MODELS = ("patient", "study", "image", "prediction", "classheatmap")


def _only_new_event(before: int) -> AuditEvent:
    assert AuditEvent.objects.count() == before + 1
    return AuditEvent.objects.order_by("pk").last()


def test_opening_a_record_in_the_admin_is_an_event_naming_its_patient(client, admin_user, viewed):  # noqa: F811
    records = {
        "patient": viewed["study"].patient,
        "study": viewed["study"],
        "image": viewed["image"],
        "prediction": viewed["prediction"],
        "classheatmap": viewed["class_heatmap"],
    }
    client.force_login(admin_user)
    for model, record in records.items():
        before = AuditEvent.objects.count()
        assert client.get(f"/admin/diagnosis/{model}/{record.pk}/change/").status_code == 200
        event = _only_new_event(before)
        assert (event.action, event.user, event.patient_mrn) == (
            AuditEvent.Action.VIEW_ADMIN,
            admin_user,
            MRN,
        ), model
        assert (event.object_type, event.object_id) == (type(record).__name__, str(record.pk))
        assert event.detail["view"] == f"admin {model}"


def test_each_page_of_an_admin_list_is_an_event_listing_its_patients(
    client,
    admin_user,
    viewed,  # noqa: F811 - the fixture imported above
    django_assert_max_num_queries,
):
    client.force_login(admin_user)
    for model in (*MODELS, "reading"):
        before = AuditEvent.objects.count()
        # The patients come with the rows (list_select_related), not one query per row.
        with django_assert_max_num_queries(20):
            assert client.get(f"/admin/diagnosis/{model}/?q=").status_code == 200
        event = _only_new_event(before)
        assert event.action == AuditEvent.Action.VIEW_ADMIN and event.user == admin_user
        assert event.detail["view"] == f"admin {model} list"
        expected = [] if model == "reading" else [MRN]  # no reading is signed in the fixture
        assert event.detail["patients"] == expected, model
