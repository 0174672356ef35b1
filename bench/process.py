"""A long-running child of the benchmark's stack, in its own process group (bench/stack.py)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.stack_services import StackError

log = logging.getLogger(__name__)


@dataclass
class ManagedProcess:
    """A long-running child in its own process group, with its output in a log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGCONT (in case it was paused) and SIGTERM the group; SIGKILL what is left."""
        if not self.alive():
            self.signal_group(signal.SIGKILL)  # stray grandchildren, if any
            return
        self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killing it", self.name, timeout_s)
        self.signal_group(signal.SIGKILL)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) survived SIGKILL", self.name, self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class NotReady(StackError):
    """A child died, or did not get ready in time; the message carries its log's tail."""


# Why a start can take minutes, for the timeout's message: measured here, importing torch and
# the inference code took 3.5 s on an idle 2-core host, 10 s beside three busy processes, and
# 78 s beside the same three at nice 10 in its own session, which is how a Celery worker runs
# while it preloads its ML libraries (CXR_WORKER_NICE, its own scheduling group).
SLOW_START_HINT = (
    "On a busy host this is usually CPU starvation, not a fault: a Celery worker lowers its "
    "priority (CXR_WORKER_NICE) before importing torch & co., so other sessions' processes "
    "outrank it. Wait for a quieter host, allow more time (--ready-timeout), or start the "
    "workers at normal priority (--worker-nice 0)."
)


def wait_ready(
    procs: list[ManagedProcess],
    is_ready: Callable[[ManagedProcess], bool],
    timeout_s: float,
    *,
    also_alive: Callable[[], None] | None = None,
    progress_s: float = 30.0,
) -> None:
    """Wait until `is_ready` holds for every process; NotReady at once when one of them exits
    (with its log's tail), and after `timeout_s` with the tail and SLOW_START_HINT. `also_alive`
    is called every round too (it raises when another process it watches has died). Every
    `progress_s` it logs who is still starting, the machine's load and their last log line."""
    started = time.monotonic()
    next_note = started + progress_s
    pending = list(procs)
    while pending:
        for proc in list(pending):
            if is_ready(proc):
                pending.remove(proc)
            elif not proc.alive():
                raise NotReady(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log_tail()}")
        if also_alive:
            also_alive()
        now = time.monotonic()
        if pending and now - started > timeout_s:
            raise NotReady(
                f"{pending[0].name} was not ready within {timeout_s:.0f} s (load average "
                f"{os.getloadavg()[0]:.1f}). {SLOW_START_HINT}\n{pending[0].log_tail()}"
            )
        if pending and now >= next_note:
            next_note = now + progress_s
            for proc in pending:
                log.info(
                    "%s still starting after %.0f s (load average %.1f); its log: %s",
                    proc.name,
                    now - started,
                    os.getloadavg()[0],
                    proc.log_tail(1) or "(empty)",
                )
        if pending:
            time.sleep(0.2)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
