"""Password spraying: one password tried on many user names from one address. Each user name fails
once, far below AXES_FAILURE_LIMIT; the address is locked out after CXR_SIGNIN_IP_FAILURE_LIMIT
failures in all (cxrweb.signin). Real sign-in POSTs through the middleware and backends."""

from __future__ import annotations

import datetime as dt

import pytest
from axes.models import AccessAttempt
from django.test import Client

from cxrweb.audit.models import AuditEvent

SPRAYER, NEIGHBOUR = "203.0.113.7", "198.51.100.9"
PASSWORD = "correct horse battery"  # the personas' password (tests/conftest.py)


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.AXES_FAILURE_LIMIT = 5
    settings.CXR_SIGNIN_IP_FAILURE_LIMIT = 8


def sign_in(client: Client, username: str, password: str, ip: str, agent: str = "curl/8"):
    return client.post(
        "/accounts/login/",
        {"username": username, "password": password},
        REMOTE_ADDR=ip,
        HTTP_USER_AGENT=agent,
    )


def spray(client: Client, count: int, ip: str = SPRAYER) -> list[int]:
    return [
        sign_in(client, f"user{n}", "Winter2026!", ip, agent=f"agent/{n}").status_code
        for n in range(count)
    ]


def test_spraying_one_password_over_many_user_names_locks_the_address_out(client, radiologist):
    # A fresh user agent each time does not help: the address counts.
    assert spray(client, 8) == [200] * 7 + [429]
    locked = sign_in(Client(), "rad1", PASSWORD, SPRAYER)
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode()
    assert not AuditEvent.objects.filter(action="login", username="rad1").exists()
    # The lockout is the address's, not the user's: rad1 signs in from elsewhere.
    elsewhere = sign_in(Client(), "rad1", PASSWORD, NEIGHBOUR)
    assert elsewhere.status_code == 302
    assert AuditEvent.objects.filter(action="login", username="rad1").count() == 1


def test_fewer_failures_than_the_address_limit_lock_nobody_out(client, radiologist):
    assert spray(client, 7) == [200] * 7
    assert sign_in(Client(), "rad1", PASSWORD, SPRAYER).status_code == 302


def test_a_successful_sign_in_does_not_wipe_the_addresss_failures(client, radiologist):
    """An attacker who holds one account cannot sign in with it to reset the count."""
    assert spray(client, 7) == [200] * 7
    assert sign_in(Client(), "rad1", PASSWORD, SPRAYER).status_code == 302
    assert spray(client, 1) == [429]


def test_the_address_is_let_in_again_after_the_cool_off(client, radiologist, settings):
    spray(client, 8)
    assert sign_in(Client(), "rad1", PASSWORD, SPRAYER).status_code == 429
    AccessAttempt.objects.filter(ip_address=SPRAYER).update(
        attempt_time=dt.datetime.now(dt.UTC)
        - dt.timedelta(hours=settings.AXES_COOLOFF_TIME, minutes=1)
    )
    assert sign_in(Client(), "rad1", PASSWORD, SPRAYER).status_code == 302


def test_one_user_name_is_still_locked_out_at_its_own_lower_limit(client, radiologist):
    codes = [sign_in(client, "rad1", "wrong", SPRAYER).status_code for _ in range(5)]
    assert codes == [200] * 4 + [429]
    assert sign_in(Client(), "rad1", PASSWORD, SPRAYER).status_code == 429
    # Other user names from that address are not locked by rad1's failures alone.
    other = sign_in(Client(), "user-x", "whatever", SPRAYER)
    assert other.status_code == 200
