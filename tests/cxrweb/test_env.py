"""cxrweb/env.py's readers alone: a good value is read, a missing one is the default, a bad one is
ImproperlyConfigured naming the variable. (tests/cxrweb/test_settings.py checks the settings
that use them.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from cxrweb.env import (
    env_ae_title,
    env_ae_titles,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_non_negative_int,
    env_paths,
    env_positive_int,
    env_url,
)

NAME = "CXR_TEST_ENV_VALUE"


@pytest.fixture(autouse=True)
def _unset(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)


def test_a_missing_variable_is_the_default():
    assert env_int(NAME, 7) == 7
    assert env_bool(NAME, True) is True
    assert env_float(NAME, 2.5, minimum=0) == 2.5
    assert env_paths(NAME, [Path("/srv/x")]) == [Path("/srv/x")]


@pytest.mark.parametrize(("raw", "expected"), [("3", 3), (" 12 ", 12), ("-4", -4)])
def test_it_reads_an_integer(monkeypatch, raw, expected):
    monkeypatch.setenv(NAME, raw)

    assert env_int(NAME, 0) == expected


@pytest.mark.parametrize(
    ("call", "raw", "message"),
    [
        (lambda: env_int(NAME, 0), "ten", "must be an integer, got 'ten'"),
        (lambda: env_int(NAME, 0, minimum=5), "4", "must be at least 5, got 4"),
        (lambda: env_int(NAME, 0, maximum=19), "20", "must be at most 19, got 20"),
        (lambda: env_positive_int(NAME, 1), "0", "must be a positive integer, got 0"),
        (lambda: env_non_negative_int(NAME, 0), "-1", "must be 0 or a positive integer, got -1"),
    ],
)
def test_it_refuses_a_bad_integer_and_names_the_variable(monkeypatch, call, raw, message):
    monkeypatch.setenv(NAME, raw)

    with pytest.raises(ImproperlyConfigured, match=f"^{NAME} {message}"):
        call()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("Yes", True), ("1", True), ("off", False), ("0", False), ("", False)],
)
def test_it_reads_a_boolean(monkeypatch, raw, expected):
    monkeypatch.setenv(NAME, raw)

    assert env_bool(NAME, not expected) is expected


def test_it_refuses_a_word_that_is_not_a_boolean(monkeypatch):
    monkeypatch.setenv(NAME, "maybe")

    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be true or false, got 'maybe'"):
        env_bool(NAME, False)


def test_it_reads_a_number_of_at_least_the_minimum(monkeypatch):
    monkeypatch.setenv(NAME, "1.5")

    assert env_float(NAME, 0.0, minimum=1) == 1.5


@pytest.mark.parametrize(
    ("raw", "message"),
    [("soon", "must be a number, got 'soon'"), ("0.5", "must be a number of 1 or more")],
)
def test_it_refuses_a_bad_number(monkeypatch, raw, message):
    monkeypatch.setenv(NAME, raw)

    with pytest.raises(ImproperlyConfigured, match=f"{NAME} {message}"):
        env_float(NAME, 1.0, minimum=1)


def test_it_refuses_nan(monkeypatch):
    monkeypatch.setenv(NAME, "nan")

    with pytest.raises(ImproperlyConfigured, match="must be a number of 1 or more, got nan"):
        env_float(NAME, 1.0, minimum=1)


def test_it_reads_absolute_paths_and_refuses_relative_ones(monkeypatch):
    monkeypatch.setenv(NAME, "/srv/a, ~/b")
    assert env_paths(NAME, []) == [Path("/srv/a"), Path("~/b").expanduser()]

    monkeypatch.setenv(NAME, "/srv/a,relative")
    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be a comma-separated list"):
        env_paths(NAME, [])


def test_it_reads_dicom_ae_titles(monkeypatch):
    assert env_ae_title(NAME, "CXRTRIAGE") == "CXRTRIAGE"
    assert env_ae_titles(NAME) == []  # empty: any calling AE
    monkeypatch.setenv(NAME, " PACS1, MODALITY 2 ,")
    assert env_ae_titles(NAME) == ["PACS1", "MODALITY 2"]


@pytest.mark.parametrize("raw", ["A" * 17, "BAD\\AE", "TAB\tAE", " "])
def test_a_bad_ae_title_is_refused(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ImproperlyConfigured, match=NAME):
        env_ae_title(NAME, "CXRTRIAGE")
    if raw.strip():
        with pytest.raises(ImproperlyConfigured, match=NAME):
            env_ae_titles(NAME)


def test_it_reads_one_of_the_choices(monkeypatch):
    assert env_choice(NAME, "a", ("a", "b")) == "a"
    monkeypatch.setenv(NAME, " B ")
    assert env_choice(NAME, "a", ("a", "b")) == "b"
    monkeypatch.setenv(NAME, "c")
    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be one of a, b; got 'c'"):
        env_choice(NAME, "a", ("a", "b"))


@pytest.mark.parametrize("bad", ["example.org/hook", "ftp://example.org/", "https:///nohost"])
def test_it_reads_an_http_url_or_nothing(monkeypatch, bad):
    assert env_url(NAME) == ""
    monkeypatch.setenv(NAME, " https://example.org/hook ")
    assert env_url(NAME) == "https://example.org/hook"
    monkeypatch.setenv(NAME, bad)
    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be an http:// or https://"):
        env_url(NAME)
