"""Shared fixtures: personas, an isolated media root, a real model version, a real worker.

Integration tests talk to a real Redis (CXR_TEST_BROKER_URL, default redis://127.0.0.1:6379/15)
through a real Celery worker running in this process (celery.contrib.testing), and to the
database given by DATABASE_URL (PostgreSQL under `make test`, SQLite otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# Django is imported inside the fixtures, so that the ML-core tests run without it:
#   pytest tests/training/ml -p no:django

REPO = Path(__file__).resolve().parents[1]


def run_python(
    code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120, **kwargs
) -> subprocess.CompletedProcess[str]:
    """``python -c code args...`` in a fresh interpreter at the repository root, with the
    repository on its path and ``env`` added to this environment; output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        **kwargs,
    )


TEST_BROKER_URL = os.environ.get("CXR_TEST_BROKER_URL", "redis://127.0.0.1:6379/15")
CLASSES = ["normal", "bacterial_pneumonia", "viral_pneumonia", "covid19"]


@pytest.fixture(autouse=True)
def _media_root(request, tmp_path):
    if not request.config.pluginmanager.hasplugin("django"):
        return  # the ML-core tests, run with -p no:django
    settings = request.getfixturevalue("settings")
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """On SQLite, the flush between transactional tests DELETEs every row, which the append-only
    triggers refuse (PostgreSQL's flush truncates, which its row triggers do not see): the test
    database goes without them. tests/security/test_audit_chain.py tests them on a migrated file."""
    from django.db import connection

    from cxrweb.audit.chain import sqlite_drop_triggers_sql

    with django_db_blocker.unblock():
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                for sql in sqlite_drop_triggers_sql():
                    cursor.execute(sql)


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    """Each test loads its model versions afresh (ids and files differ between tests)."""
    import sys

    yield
    if "diagnosis.worker.compute" in sys.modules:
        sys.modules["diagnosis.worker.compute"].clear_cache()


def _user(username: str, *groups: str, **extra) -> User:
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(username=username, password="correct horse battery", **extra)
    for name in groups:
        group, _ = Group.objects.get_or_create(name=name)
        user.groups.add(group)
    return user


@pytest.fixture
def radiologist(db) -> User:
    return _user("rad1", "radiologist", first_name="Ada", last_name="Radiologist")


@pytest.fixture
def second_radiologist(db) -> User:
    return _user("rad2", "radiologist")


@pytest.fixture
def admin_user(db) -> User:
    return _user("admin1", "admin", is_staff=True, is_superuser=True)


@pytest.fixture
def outsider(db) -> User:
    return _user("outsider")


@pytest.fixture
def rad_client(client, radiologist):
    client.force_login(radiologist)
    return client


@pytest.fixture
def api_token(radiologist) -> str:
    from cxrweb.apitokens.models import ApiToken

    return ApiToken.objects.create(user=radiologist)[1]


@pytest.fixture(scope="session")
def state_dict_file(tmp_path_factory) -> Callable[[str, int], str]:
    """A plain torchvision state_dict (weights=None), as a user would save one, per arch."""
    made: dict[tuple[str, int], str] = {}

    def make(arch: str = "mobilenet_v2", num_classes: int = len(CLASSES)) -> str:
        key = (arch, num_classes)
        if key not in made:
            import torch
            import torchvision

            torch.manual_seed(0)
            model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
            path = tmp_path_factory.mktemp("weights") / f"{arch}-{num_classes}.pt"
            torch.save(model.state_dict(), path)
            made[key] = str(path)
        return made[key]

    return make


@pytest.fixture
def model_version(db, state_dict_file):
    """A candidate model version imported the way `manage.py import_model` does."""
    from training.services import model_version_import

    return model_version_import(
        path=state_dict_file("mobilenet_v2"),
        architecture="mobilenet_v2",
        classes=CLASSES,
        name="test-mobilenet",
    )


@pytest.fixture
def production_model(model_version):
    from training.services import model_version_promote

    return model_version_promote(
        version=model_version, reason="test", override_reason="test weights"
    )


@dataclass(frozen=True)
class SentTask:
    """One task sent by name (diagnosis.dispatch, training.dispatch), as the broker got it."""

    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # countdown, priority, ...


@pytest.fixture
def sent_tasks(monkeypatch) -> list[SentTask]:
    """Stand in for the broker: every task sent through the Celery app (send_task, which the
    dispatch modules call) is recorded here with its arguments and options instead of being
    published. A name that no task of the app registers fails the test at once."""
    from cxrweb.celery import app

    app.loader.import_default_modules()  # Celery's autodiscovery: the apps' tasks modules
    sent: list[SentTask] = []

    def send_task(name, args=None, kwargs=None, **options):
        assert name in app.tasks, f"no task is registered as {name!r}"
        sent.append(SentTask(name, tuple(args or ()), dict(kwargs or {}), options))

    monkeypatch.setattr(app, "send_task", send_task)
    return sent


@pytest.fixture(scope="session")
def _broker() -> str:
    import redis

    from cxrweb.celery import app

    client = redis.Redis.from_url(TEST_BROKER_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:  # pragma: no cover - environment problem
        pytest.fail(
            f"No Redis at {TEST_BROKER_URL}: run the suite with `make test`, which starts one "
            f"({exc})."
        )
    client.flushdb()
    app.conf.broker_url = TEST_BROKER_URL
    return TEST_BROKER_URL


@pytest.fixture
def celery_worker(_broker, transactional_db) -> Iterator[object]:
    """A real Celery worker (solo pool, in a thread of this process) consuming `inference`.

    Workers keep their database connection between tasks; this one lives in a thread of the
    test process, so it closes it after each task: the test database is dropped at the end of
    the session, which fails while a connection to it is open.
    """
    yield from _solo_worker(["inference"])


@pytest.fixture
def training_worker(_broker, transactional_db) -> Iterator[object]:
    """A real Celery worker like `celery_worker`, consuming the `training` queue."""
    yield from _solo_worker(["training"])


def _solo_worker(queues: list[str]) -> Iterator[object]:
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun
    from django.db import connections

    from cxrweb.celery import app

    def close_connections(**kwargs) -> None:
        connections.close_all()

    task_postrun.connect(close_connections, weak=False)
    try:
        with start_worker(
            app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            queues=queues,
            shutdown_timeout=30,
        ) as worker:
            yield worker
    finally:
        task_postrun.disconnect(close_connections)


def wait_for(
    predicate: Callable[[], object], *, timeout: float = 90, interval: float = 0.2, what: str = ""
) -> object:
    """Poll until predicate() is truthy and return its value; AssertionError after timeout
    (callers may catch it to add what they know). Shared by the integration and fault tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for "
                f"{what or predicate.__doc__ or predicate}"
            )
        time.sleep(interval)


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (exited, waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---- browser tests (tests/browser, tests/security): one Chromium for the whole session ----------
@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where browser tests save their screenshots (CXR_TEST_ARTIFACTS, default test-artifacts/)."""
    path = Path(os.environ.get("CXR_TEST_ARTIFACTS", "test-artifacts")) / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

    # Playwright's sync API runs an event loop in this thread; the Django ORM calls the tests
    # make around it are ordinary synchronous code. Only while the browser tests run.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install Debian's `chromium` (make test does)."
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()
