"""Who may see the training pages: admins only; radiologists and outsiders are refused, and
audited."""

from __future__ import annotations

import pytest

from cxrweb.audit.models import AuditEvent
from training.models import ModelPromotion, ModelVersion

pytestmark = pytest.mark.django_db


def page_urls(world) -> list[str]:
    d, v = world["dataset"], world["version"]
    urls = [
        "/training/",
        "/training/datasets/",
        f"/training/datasets/{d.pk}/",
        f"/training/datasets/{d.pk}/status/",
        f"/training/datasets/{world['scanning'].pk}/",
        f"/training/datasets/{world['failed'].pk}/",
        "/training/runs/",
        "/training/runs/new/",
        f"/training/runs/new/?dataset={d.pk}",
        "/training/models/",
        f"/training/models/{v.pk}/",
        f"/training/models/{v.pk}/evaluations/",
        "/training/compare/",
        f"/training/compare/?candidate={v.pk}",
        f"/training/compare/?candidate={v.pk}&dataset={d.pk}",
        f"/training/compare/results/?candidate={v.pk}&dataset={d.pk}",
    ]
    for run in world["runs"].values():
        urls += [f"/training/runs/{run.pk}/", f"/training/runs/{run.pk}/status/"]
    return urls


POST_URLS = [
    "/training/datasets/",
    "/training/runs/new/",
    "/training/runs/{run}/cancel/",
    "/training/models/{version}/evaluate/",
    "/training/models/{version}/promote/",
    "/training/compare/",
]


def test_every_page_renders_for_an_admin(admin_client, world):
    for url in page_urls(world):
        resp = admin_client.get(url)
        assert resp.status_code == 200, url
        assert b"Traceback" not in resp.content


def test_the_nav_links_to_the_training_pages_for_admins_only(admin_client, rad_client, world):
    assert 'href="/training/"' in admin_client.get("/").content.decode()
    assert 'href="/training/"' not in rad_client.get("/").content.decode()


@pytest.mark.parametrize("persona", ["radiologist", "outsider"])
def test_radiologists_and_outsiders_are_refused_on_every_page(client, world, persona, request):
    client.force_login(request.getfixturevalue(persona))
    v, run = world["version"], world["runs"]["running"]
    urls = page_urls(world) + [
        f"/training/runs/{world['runs']['done'].pk}/plots/history.png",
        f"/training/models/{v.pk}/checkpoint.pt",
        f"/training/evaluations/{world['evaluations']['done'].pk}/plots/roc.png",
    ]
    for url in urls:
        assert client.get(url).status_code == 403, url
    for url in POST_URLS:
        url = url.format(run=run.pk, version=v.pk)
        assert client.post(url, {"reason": "x", "name": "x"}).status_code == 403, url
    run.refresh_from_db()
    assert not run.cancel_requested
    assert v.status == ModelVersion.Status.CANDIDATE and not ModelPromotion.objects.exists()
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ACCESS_DENIED).exists()


def test_anonymous_users_are_sent_to_sign_in(client, db):
    resp = client.get("/training/")
    assert resp.status_code == 302 and "/accounts/login/" in resp["Location"]
