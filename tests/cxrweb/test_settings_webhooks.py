"""cxrweb/settings_webhooks.py: the webhook settings are checked as they are read; a URL without
its secret stops the process at start."""

from __future__ import annotations

import pytest

from tests.conftest import run_python

IMPORT = "import cxrweb.settings as s; print(repr((s.{})))"
BASE_ENV = {"SECRET_KEY": "x", "DATABASE_URL": "postgres://u:p@127.0.0.1:5432/unused"}
NAMES = (
    "CXR_PUBLIC_URL",
    "CXR_WEBHOOK_URL",
    "CXR_WEBHOOK_SECRET",
    "CXR_WEBHOOK_ON",
    "CXR_WEBHOOK_TIMEOUT_S",
    "CXR_WEBHOOK_MAX_ATTEMPTS",
    "CXR_WEBHOOK_BACKOFF_S",
    "CXR_WEBHOOK_BACKOFF_MAX_S",
)
GOOD = {"CXR_WEBHOOK_URL": "https://hooks.example.org/cxr", "CXR_WEBHOOK_SECRET": "s" * 32}


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch):
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)


def _settings(attribute: str, **env: str):
    return run_python(IMPORT.format(attribute), env={**BASE_ENV, **env})


def test_webhooks_are_off_by_default_and_the_defaults_are_read():
    result = _settings(", s.".join(n for n in NAMES if n != "CXR_WEBHOOK_SECRET"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('', '', 'stat-flagged', 10.0, 8, 30.0, 3600.0)"


def test_good_values_are_read():
    result = _settings(
        "CXR_WEBHOOK_URL, s.CXR_WEBHOOK_ON, s.CXR_PUBLIC_URL, s.CXR_WEBHOOK_MAX_ATTEMPTS",
        **GOOD,
        CXR_WEBHOOK_ON="Flagged",
        CXR_PUBLIC_URL="https://cxr.example.org/",
        CXR_WEBHOOK_MAX_ATTEMPTS="3",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "('https://hooks.example.org/cxr', 'flagged', 'https://cxr.example.org', 3)"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CXR_WEBHOOK_URL": GOOD["CXR_WEBHOOK_URL"]}, "CXR_WEBHOOK_SECRET must be set"),
        ({**GOOD, "CXR_WEBHOOK_SECRET": "short"}, "at least 16 characters"),
        ({"CXR_WEBHOOK_URL": "ftp://x.org/h"}, "CXR_WEBHOOK_URL must be an http:// or https://"),
        ({"CXR_PUBLIC_URL": "cxr.example.org"}, "CXR_PUBLIC_URL must be an http:// or https://"),
        ({"CXR_WEBHOOK_ON": "always"}, "CXR_WEBHOOK_ON must be one of stat-flagged, flagged"),
        ({"CXR_WEBHOOK_TIMEOUT_S": "0"}, "CXR_WEBHOOK_TIMEOUT_S must be a number of 0.1 or"),
        ({"CXR_WEBHOOK_MAX_ATTEMPTS": "0"}, "CXR_WEBHOOK_MAX_ATTEMPTS must be a positive"),
        ({"CXR_WEBHOOK_BACKOFF_S": "soon"}, "CXR_WEBHOOK_BACKOFF_S must be a number"),
    ],
)
def test_a_bad_value_stops_the_process_and_says_what_to_set(env, message):
    result = _settings("CXR_WEBHOOK_URL", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr
