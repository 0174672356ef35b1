"""Typed readers of environment variables for cxrweb/settings.py.

Each checks its value as it reads it and raises ImproperlyConfigured naming the variable, so a
bad value stops the process at start rather than misbehaving later.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.Env()

_TRUE_STRINGS = ("true", "on", "ok", "y", "yes", "1")
_FALSE_STRINGS = ("false", "off", "n", "no", "0", "")


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """An integer setting; ImproperlyConfigured, naming the variable, on a bad value."""
    raw = os.environ.get(name)
    if raw is None:
        value = default
    else:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}.") from None
    if minimum is not None and value < minimum:
        least = {0: "0 or a positive integer", 1: "a positive integer"}.get(
            minimum, f"at least {minimum}"
        )
        raise ImproperlyConfigured(f"{name} must be {least}, got {value!r}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {value!r}.")
    return value


def env_positive_int(name: str, default: int) -> int:
    return env_int(name, default, minimum=1)


def env_non_negative_int(name: str, default: int) -> int:
    return env_int(name, default, minimum=0)


def env_bool(name: str, default: bool) -> bool:
    """A boolean setting (true/false, yes/no, on/off, 1/0); anything else is refused."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in _TRUE_STRINGS:
        return True
    if word in _FALSE_STRINGS:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}.")


def env_float(name: str, default: float, *, minimum: float, maximum: float | None = None) -> float:
    """A number setting of at least `minimum` and at most `maximum` (NaN is refused too)."""
    raw = os.environ.get(name)
    try:
        value = default if raw is None else float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}.") from None
    if not value >= minimum:  # also NaN
        raise ImproperlyConfigured(f"{name} must be a number of {minimum} or more, got {value!r}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be a number of at most {maximum}, got {value!r}.")
    return value


def env_paths(name: str, default: list[Path]) -> list[Path]:
    """A comma-separated list of absolute paths."""
    raw = env.list(name, default=[str(path) for path in default])
    paths = [Path(item.strip()).expanduser() for item in raw if item.strip()]
    if not paths or not all(path.is_absolute() for path in paths):
        raise ImproperlyConfigured(
            f"{name} must be a comma-separated list of absolute paths, got {raw!r}."
        )
    return paths


def _ae_title_problem(value: str) -> str:
    if not 1 <= len(value) <= 16:
        return "1 to 16 characters"
    if not all(" " <= ch <= "~" and ch != "\\" for ch in value):
        return "printable ASCII without backslashes"
    return ""


def env_ae_title(name: str, default: str) -> str:
    """A DICOM Application Entity title: 1 to 16 printable ASCII characters, no backslash."""
    value = os.environ.get(name, default).strip()
    problem = _ae_title_problem(value)
    if problem:
        raise ImproperlyConfigured(f"{name} must be a DICOM AE title ({problem}), got {value!r}.")
    return value


def env_ae_titles(name: str) -> list[str]:
    """A comma-separated list of DICOM AE titles; empty (the default) for none."""
    titles = [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]
    for title in titles:
        problem = _ae_title_problem(title)
        if problem:
            raise ImproperlyConfigured(
                f"{name} must list DICOM AE titles ({problem} each), got {title!r}."
            )
    return titles


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (case-insensitive, stored lower-case)."""
    raw = os.environ.get(name)
    value = default if raw is None else raw.strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {raw!r}.")
    return value


def env_url(name: str, default: str = "") -> str:
    """An http(s) URL with a host, or empty."""
    value = os.environ.get(name, default).strip()
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImproperlyConfigured(
            f"{name} must be an http:// or https:// address with a host, got {value!r}."
        )
    return value
