"""Process harness for the fault-injection tests: the whole app as real processes, no mocks.

One private PostgreSQL cluster (initdb in a temp dir, its own port), one private Redis (its own
port), gunicorn, Celery workers (`-Q inference --concurrency 1 --pool prefork`, one process group
each) and one Celery beat (the periodic reconciler), started once per session. Tests break them
on purpose (SIGKILL a pool child or a whole worker, stop Redis or PostgreSQL) and the function
fixture `stack` puts the baseline back before each test (Redis and PostgreSQL up, the web server
and beat running, two live workers).

Nothing here depends on the suite's DATABASE_URL or CXR_TEST_BROKER_URL, nor on pytest-django's
database fixtures: the app runs in child processes; tests talk to it over the JSON API and read
the private database with psycopg. Every child runs in its own process group and is stopped at
teardown (SIGTERM, bounded wait, SIGKILL), even when a test fails; the tail of every child's log
is printed when a test fails. The shared PostgreSQL (5432) and Redis (6379) are never touched.

The harness lives in plain modules beside this one: processes.py (a child in its own process
group), services.py (the private PostgreSQL and Redis), client.py (the JSON API), config.py
(timings, the children's environment), stack.py (FaultStack) and midflight.py (catching a
prediction mid-flight). This file keeps the pytest hooks and the fixtures.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.services import REDIS_SERVER, pg_bindir
from tests.faults.stack import FaultStack


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "faults: fault-injection tests against real processes (private PostgreSQL, Redis, "
        "gunicorn, Celery workers and beat)",
    )


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_faults_rep_{report.when}", report)


@pytest.fixture(scope="session")
def fault_stack(tmp_path_factory) -> Iterator[FaultStack]:
    bindir = pg_bindir()
    if bindir is None or not REDIS_SERVER:
        pytest.skip("the fault tests need PostgreSQL's initdb/pg_ctl and redis-server binaries")
    tmp = tmp_path_factory.mktemp("faults")
    # PostgreSQL runs as the postgres user when we are root: its dir must be reachable by it,
    # which pytest's 0700 base temp dir is not.
    pg_root = Path(tempfile.mkdtemp(prefix="cxr-faults-pg-"))
    os.chmod(pg_root, 0o755)
    stack = FaultStack(tmp, pg_root, bindir)
    try:
        stack.start()
    except BaseException:
        print(stack.logs_tail(80))
        stack.stop()
        raise
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def stack(fault_stack: FaultStack, request) -> Iterator[FaultStack]:
    """The session's stack, put back to its baseline first; logs printed if the test fails."""
    fault_stack.ensure_baseline()
    started = time.monotonic()
    yield fault_stack
    report = getattr(request.node, "_faults_rep_call", None)
    print(f"\n{request.node.name}: {time.monotonic() - started:.1f}s")
    if report is not None and report.failed:
        print(fault_stack.logs_tail(60))
