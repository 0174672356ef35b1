"""bench/process.py's wait_ready: the benchmark waits long for a slow start, never for a dead
child, and says why when it gives up."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.process import ManagedProcess, NotReady, wait_ready


def _start(tmp_path: Path, code: str) -> ManagedProcess:
    log_path = tmp_path / "child.log"
    with log_path.open("wb") as fh:
        popen = subprocess.Popen(
            [sys.executable, "-u", "-c", code], stdout=fh, stderr=subprocess.STDOUT
        )
    return ManagedProcess("worker0", popen, log_path)


def _ready(proc: ManagedProcess) -> bool:
    return " ready." in proc.log_path.read_text()


@pytest.fixture
def started(tmp_path):
    procs: list[ManagedProcess] = []

    def start(code: str) -> ManagedProcess:
        procs.append(_start(tmp_path, code))
        return procs[-1]

    yield start
    for proc in procs:
        proc.popen.kill()
        proc.popen.wait()


def test_it_returns_once_the_child_says_it_is_ready(started):
    proc = started(
        "import time; print('importing'); time.sleep(0.5); print('celery@x ready.'); time.sleep(60)"
    )

    wait_ready([proc], _ready, timeout_s=60)

    assert proc.alive() and "ready." in proc.log_path.read_text()


def test_a_child_that_dies_ends_the_wait_at_once_with_its_log(started):
    proc = started("import sys; print('ImportError: no module named psycopg'); sys.exit(3)")
    began = time.monotonic()

    with pytest.raises(NotReady, match=r"worker0 exited \(3\)") as info:
        wait_ready([proc], _ready, timeout_s=600)

    assert "no module named psycopg" in str(info.value)
    assert time.monotonic() - began < 30  # not the 600 s timeout


def test_a_dead_neighbour_ends_the_wait_too(started):
    proc = started("import time; time.sleep(60)")

    def web_server_died() -> None:
        raise NotReady("gunicorn exited unexpectedly")

    with pytest.raises(NotReady, match="gunicorn exited"):
        wait_ready([proc], _ready, timeout_s=600, also_alive=web_server_died)


def test_a_slow_start_times_out_with_the_log_and_the_likely_cause(started):
    proc = started("import time; print('preloading torch'); time.sleep(60)")

    with pytest.raises(NotReady, match="not ready within 1 s") as info:
        wait_ready([proc], _ready, timeout_s=1)

    assert "preloading torch" in str(info.value)
    assert "CXR_WORKER_NICE" in str(info.value) and "--ready-timeout" in str(info.value)
