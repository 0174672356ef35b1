"""API tokens (issue #20, item 8): stored as a digest, expiring, revocable, shown once."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from cxrweb.apitokens.auth import TokenAuthentication
from cxrweb.apitokens.models import ApiToken
from cxrweb.audit.models import AuditEvent
from tests.conftest import _user, run_python

pytestmark = pytest.mark.django_db

# An endpoint that answers 404 to a signed-in clinical user and 401 to anyone else.
PROBE = "/api/v1/predictions/999999/"


def _create_token(username: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_token", username, *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def _revoke(*args: str) -> str:
    out = io.StringIO()
    call_command("revoke_tokens", *args, stdout=out)
    return out.getvalue()


def _get(key: str, path: str = PROBE):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get(path)


@pytest.fixture
def model_admin(db) -> User:
    """The admin role as `create_user --role admin` makes it: staff, not a superuser."""
    return _user("ml-admin", "admin", is_staff=True)


def test_a_token_from_create_token_works_with_the_token_header(radiologist):
    key, note = _create_token("rad1", "--name", "PACS bridge")
    assert len(key) == 64 and "\n" not in key  # the key alone on stdout
    assert "not shown again" in note and key not in note
    assert _get(key).status_code == 404  # signed in, allowed, not found
    assert _get("0" * 64).status_code == 401
    token = ApiToken.objects.get()
    assert token.user == radiologist and token.name == "PACS bridge"


def test_a_token_expires_after_the_configured_days_or_the_given_ones(radiologist, settings):
    settings.CXR_API_TOKEN_TTL_DAYS = 30
    _create_token("rad1")
    _create_token("rad1", "--expiry-days", "7")
    now = timezone.now()
    expiries = sorted(t.expiry - now for t in ApiToken.objects.all())
    assert timedelta(days=6, hours=23) < expiries[0] <= timedelta(days=7)
    assert timedelta(days=29, hours=23) < expiries[1] <= timedelta(days=30)


@pytest.mark.parametrize("days", ["0", "-3", "x"])
def test_create_token_refuses_an_expiry_that_is_not_a_positive_number(radiologist, days):
    with pytest.raises(CommandError):
        _create_token("rad1", "--expiry-days", days)
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("days", ["366", "100000", "999999999"])
def test_create_token_refuses_an_expiry_beyond_the_maximum_lifetime(radiologist, days):
    with pytest.raises(CommandError, match=r"at most 365 days \(CXR_API_TOKEN_MAX_TTL_DAYS\)"):
        _create_token("rad1", "--expiry-days", days)
    assert not ApiToken.objects.exists()
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.TOKEN_CREATED).exists()


def test_create_token_takes_the_maximum_lifetime_and_the_setting_moves_it(radiologist, settings):
    _create_token("rad1", "--expiry-days", "365")
    settings.CXR_API_TOKEN_MAX_TTL_DAYS = 30
    with pytest.raises(CommandError, match="at most 30 days"):
        _create_token("rad1", "--expiry-days", "31")
    assert ApiToken.objects.count() == 1
    assert ApiToken.objects.get().expiry - timezone.now() <= timedelta(days=365)


@pytest.mark.parametrize(
    "env",
    [
        {"CXR_API_TOKEN_MAX_TTL_DAYS": "0"},
        {"CXR_API_TOKEN_MAX_TTL_DAYS": "many"},
        {"CXR_API_TOKEN_MAX_TTL_DAYS": "100000"},
        {"CXR_API_TOKEN_MAX_TTL_DAYS": "30", "CXR_API_TOKEN_TTL_DAYS": "90"},
    ],
)
def test_a_bad_maximum_token_lifetime_stops_the_app(env):
    done = run_python(
        "import django; django.setup()", env={"DJANGO_SETTINGS_MODULE": "cxrweb.settings", **env}
    )
    assert done.returncode != 0
    assert "CXR_API_TOKEN_MAX_TTL_DAYS" in done.stderr or "invalid literal" in done.stderr


def test_create_token_refuses_an_unknown_or_inactive_user(radiologist):
    with pytest.raises(CommandError, match="No user named"):
        _create_token("nobody")
    radiologist.is_active = False
    radiologist.save()
    with pytest.raises(CommandError, match="inactive"):
        _create_token("rad1")
    assert not ApiToken.objects.exists()


def test_an_expired_token_is_a_401_with_a_json_error(radiologist):
    key, _ = _create_token("rad1")
    ApiToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    resp = _get(key)
    assert resp.status_code == 401
    assert resp["WWW-Authenticate"] == "Token"
    assert "expired" in resp.json()["error"]


def test_a_revoked_token_is_a_401(radiologist):
    key, _ = _create_token("rad1")
    assert _get(key).status_code == 404
    assert "Revoked 1 token" in _revoke("rad1", "--all")
    resp = _get(key)
    assert resp.status_code == 401 and resp.json()["error"] == "Invalid token."


@pytest.mark.parametrize(
    "header",
    [b"Token \x00abc", b"Token \xe9\xe9", b"Token a b", b"Token", b"Token " + b"f" * 5000],
    ids=["nul", "latin-1", "two-words", "no-key", "5000-chars"],
)
def test_a_malformed_token_header_is_a_401_not_a_server_error(radiologist, header):
    resp = APIClient().get(PROBE, HTTP_AUTHORIZATION=header.decode("latin-1"))
    assert resp.status_code == 401 and "error" in resp.json()


def test_the_database_holds_no_clear_text_key(radiologist):
    key, _ = _create_token("rad1", "--name", "lab script")
    tables = [ApiToken._meta.db_table, AuditEvent._meta.db_table]
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            rows = cursor.fetchall()
            assert rows, table
            for row in rows:
                for value in row:
                    assert key not in str(value), f"the key is stored in {table}"
    # What is stored is the digest and the first characters, which is what finds the row.
    token = ApiToken.objects.get()
    assert key.startswith(token.token_key) and len(token.token_key) < len(key) // 4


def test_token_authentication_reads_the_token_user_and_roles_in_one_query(
    radiologist, django_assert_num_queries
):
    key, _ = _create_token("rad1")
    with django_assert_num_queries(1):
        user, token = TokenAuthentication().authenticate_credentials(key.encode())
    assert user == radiologist and token.user is user
    assert user._cxr_roles == frozenset({"radiologist"})


def test_the_admin_lists_tokens_without_their_keys_and_makes_none(client, model_admin, radiologist):
    key, _ = _create_token("rad1", "--name", "PACS bridge")
    token = ApiToken.objects.get()
    client.force_login(model_admin)
    page = client.get("/admin/apitokens/apitoken/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "PACS bridge" in body and token.token_key in body and "rad1" in body
    assert key not in body and token.digest not in body
    detail = client.get(f"/admin/apitokens/apitoken/{token.pk}/change/")
    assert detail.status_code == 200 and key not in detail.content.decode()
    assert client.get("/admin/apitokens/apitoken/add/").status_code == 403


def test_the_admin_action_revokes_the_selected_tokens_and_audits_it(
    client, model_admin, radiologist
):
    kept, _ = _create_token("rad1", "--name", "keep")
    revoked, _ = _create_token("rad1", "--name", "drop")
    target = ApiToken.objects.get(name="drop")
    client.force_login(model_admin)
    resp = client.post(
        "/admin/apitokens/apitoken/",
        {"action": "revoke_selected", "_selected_action": [target.pk]},
        follow=True,
    )
    assert "Revoked 1 token" in resp.content.decode()
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["keep"]
    assert _get(revoked).status_code == 401 and _get(kept).status_code == 404
    event = AuditEvent.objects.get(action=AuditEvent.Action.TOKEN_REVOKED)
    assert event.user == model_admin and event.object_id == str(target.pk)
    assert event.detail["owner"] == "rad1" and event.detail["via"] == "admin"


def test_django_admins_delete_is_not_offered_for_tokens(client, model_admin, radiologist):
    _create_token("rad1")
    token = ApiToken.objects.get()
    client.force_login(model_admin)
    resp = client.post(f"/admin/apitokens/apitoken/{token.pk}/delete/", {"post": "yes"})
    assert resp.status_code == 403
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_issuing_a_token_is_an_audit_event_naming_the_token(radiologist):
    _create_token("rad1", "--name", "PACS bridge")
    token = ApiToken.objects.get()
    event = AuditEvent.objects.get(action=AuditEvent.Action.TOKEN_CREATED)
    assert event.object_type == "ApiToken" and event.object_id == str(token.pk)
    assert event.detail["owner"] == "rad1" and event.detail["name"] == "PACS bridge"
    assert event.detail["via"] == "manage.py create_token"


def test_revoke_tokens_takes_all_of_a_users_tokens_and_no_one_elses(
    radiologist, second_radiologist
):
    mine = [_create_token("rad1")[0] for _ in range(2)]
    theirs, _ = _create_token("rad2")
    assert "Revoked 2 token" in _revoke("rad1", "--all")
    assert [_get(k).status_code for k in mine] == [401, 401]
    assert _get(theirs).status_code == 404
    assert AuditEvent.objects.filter(action=AuditEvent.Action.TOKEN_REVOKED).count() == 2


def test_revoke_tokens_takes_one_token_by_id_or_by_the_keys_first_characters(radiologist):
    by_id, _ = _create_token("rad1", "--name", "a")
    by_prefix, _ = _create_token("rad1", "--name", "b")
    other, _ = _create_token("rad1", "--name", "c")
    _revoke("rad1", "--id", str(ApiToken.objects.get(name="a").pk))
    _revoke("rad1", "--prefix", by_prefix[:10])
    assert [_get(k).status_code for k in (by_id, by_prefix, other)] == [401, 401, 404]


def test_revoke_tokens_refuses_a_token_of_another_user_or_a_short_prefix(
    radiologist, second_radiologist
):
    key, _ = _create_token("rad2")
    with pytest.raises(CommandError, match="nothing was revoked"):
        _revoke("rad1", "--id", str(ApiToken.objects.get().pk))
    with pytest.raises(CommandError, match="at least 8"):
        _revoke("rad2", "--prefix", key[:4])
    with pytest.raises(CommandError, match="USER"):
        _revoke("--all")
    assert _get(key).status_code == 404


def test_revoke_tokens_expired_removes_only_expired_tokens(radiologist, second_radiologist):
    old, _ = _create_token("rad1")
    ApiToken.objects.update(expiry=timezone.now() - timedelta(days=1))
    fresh, _ = _create_token("rad2")
    assert "Revoked 1 token" in _revoke("--expired")
    assert list(ApiToken.objects.values_list("user__username", flat=True)) == ["rad2"]
    assert _get(fresh).status_code == 404


@pytest.mark.parametrize("value", ["0", "-1", "ninety"])
def test_a_token_lifetime_that_is_not_a_positive_number_stops_the_app(value):
    done = run_python(
        "import django; django.setup()",
        env={"DJANGO_SETTINGS_MODULE": "cxrweb.settings", "CXR_API_TOKEN_TTL_DAYS": value},
    )
    assert done.returncode != 0
    assert "CXR_API_TOKEN_TTL_DAYS" in done.stderr or "invalid literal" in done.stderr


@pytest.mark.django_db(transaction=True)
def test_upgrading_drops_the_old_clear_text_token_table():
    """Deployed databases hold rest_framework.authtoken's keys in clear: the migration drops them."""
    call_command("migrate", "apitokens", "0001", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY)")
        cursor.execute("INSERT INTO authtoken_token VALUES ('cleartextkey')")
    call_command("migrate", "apitokens", verbosity=0)
    assert "authtoken_token" not in connection.introspection.table_names()
