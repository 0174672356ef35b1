"""The webhook delivery log in the Django admin, in Chromium: an admin sees the deliveries (a
hostile accession number shown as text), resends a failed one, and the page says so."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from diagnosis.models import Study, WebhookDelivery
from diagnosis.worker.webhooks import webhook_deliver
from tests.browser.conftest import sign_in
from tests.diagnosis.conftest import finish_prediction, upload_view
from tests.diagnosis.conftest import pneumonia_model as pneumonia_model  # a fixture
from tests.diagnosis.webhook_receiver import Receiver, serve

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HOSTILE = '<img src=x onerror="alert(1)">'


@pytest.fixture
def receiver():
    yield from serve(Receiver(statuses=[200, 404]))


def test_an_admin_reads_the_delivery_log_and_resends_a_failed_one(
    page,
    live_server,
    _broker,
    settings,
    receiver,
    admin_user,
    radiologist,
    pneumonia_model,
    artifacts_dir,
):
    settings.CXR_WEBHOOK_URL = receiver.url
    settings.CXR_WEBHOOK_SECRET = "browser-webhook-secret-123"
    settings.CXR_WEBHOOK_BACKOFF_S = 0.0
    for n, accession in enumerate(["ACC-WB-1", HOSTILE]):
        result = upload_view(radiologist, f"MRN-WB{n}", accession, n, priority=Study.Priority.STAT)
        finish_prediction(result.prediction, pneumonia_model, {"NORMAL": 0.2, "PNEUMONIA": 0.8})
    for delivery in WebhookDelivery.objects.order_by("pk"):
        webhook_deliver(delivery_id=delivery.pk)  # the first is delivered, the second gets 404
    failed = WebhookDelivery.objects.get(status="failed")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    sign_in(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/admin/diagnosis/webhookdelivery/")
    table = page.locator("#result_list")
    assert table.get_by_text("Delivered", exact=True).count() == 1
    assert table.get_by_text("Failed", exact=True).count() == 1
    assert table.get_by_text("HTTP 404 Not Found: answer 404").count() == 1
    assert table.get_by_text(HOSTILE).count() == 1  # shown as text, never run
    page.screenshot(path=artifacts_dir / "webhook-deliveries.png", full_page=True)

    page.locator(f'input[name="_selected_action"][value="{failed.pk}"]').check()
    page.select_option('select[name="action"]', "resend")
    page.get_by_role("button", name="Go").click()
    expect(page.get_by_text("1 delivery(ies) queued again.")).to_be_visible()
    page.screenshot(path=artifacts_dir / "webhook-resent.png", full_page=True)
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("pending", 0)

    page.goto(f"{live_server.url}/admin/diagnosis/webhookdelivery/{failed.pk}/change/")
    expect(page.get_by_text('"priority": "STAT"')).to_be_visible()  # the payload, read-only
    assert page.locator("input[type=submit][name=_save]").count() == 0
    page.screenshot(path=artifacts_dir / "webhook-delivery.png", full_page=True)
    assert dialogs == []
