"""Child processes for the fault tests: each in its own process group, its output in a log."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids_in_group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid:
                pids.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return pids


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (the prefork pool processes of a Celery worker)."""
    try:
        import psutil

        return [
            c.pid
            for c in psutil.Process(pid).children(recursive=False)
            if c.status() != psutil.STATUS_ZOMBIE
        ]
    except ImportError:  # pragma: no cover - psutil is installed; /proc otherwise
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(fields[1]) == pid and fields[0] != "Z":
                        out.append(int(entry.name))
        return out
    except Exception:  # noqa: BLE001 - the process is gone
        return []


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


class Proc:
    """A long-running child in its own process group (session), its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None,
        log_path: Path,
        cwd: Path = REPO,
        user: str | None = None,
    ):
        self.name, self.argv, self.env, self.log_path, self.cwd = name, argv, env, log_path, cwd
        self.user = user
        self.popen: subprocess.Popen | None = None
        self.log_offset = 0

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        kwargs = {}
        if self.user:
            kwargs = {"user": self.user, "group": self.user, "extra_groups": []}
        with self.log_path.open("ab") as fh:
            fh.write(
                f"\n----- {time.strftime('%H:%M:%S')} start {self.name}: "
                f"{' '.join(self.argv)}\n".encode()
            )
            fh.flush()
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **kwargs,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def children(self) -> list[int]:
        return child_pids(self.pid) if self.alive() else []

    def log_text(self, since_start: bool = True) -> str:
        try:
            with self.log_path.open("rb") as fh:
                if since_start:
                    fh.seek(self.log_offset)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text(since_start=False).splitlines()[-lines:])

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is not None and not _pids_in_group(self.popen.pid):
            return  # nothing left in the group (and its id may be reused one day)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill_group(self, timeout: float = 10.0) -> None:
        """SIGKILL the whole group (main process and pool children) and wait until it is gone."""
        self.signal_group(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
            deadline = time.monotonic() + timeout
            while _pids_in_group(self.popen.pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int | None:
        """`sig` (SIGTERM: a warm shutdown for Celery) to the main process, a bounded wait, then
        SIGKILL to whatever is left in its group."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.signal_group(signal.SIGCONT)  # in case a test paused it
            # To the main process only: a Celery worker's warm shutdown lets its pool children
            # finish their tasks, which a signal to the whole group would not.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        self.kill_group(timeout=5)
        return self.popen.poll()
