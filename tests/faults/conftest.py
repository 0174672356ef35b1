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
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
CLASSES = ["normal", "pneumonia"]
REDIS_SERVER = shutil.which(
    "redis-server", path="/usr/bin:/usr/local/bin:" + os.environ.get("PATH", "")
)
BASE_WORKERS = 2

# Small timings, so that the scenarios finish in seconds (see cxrweb/settings.py).
TIMINGS = {
    "CXR_PREDICTION_STALE_AFTER_S": 20,
    "CXR_RECONCILE_QUEUED_AFTER_S": 10,
    "CXR_RECONCILE_EVERY_S": 3,
    "CXR_RETRY_DELAY_S": 0.5,
    "CXR_TASK_TIME_LIMIT": 60,  # the broker's visibility timeout is 3x: 180 s
    "CXR_PREDICTION_MAX_ATTEMPTS": 3,
    "CXR_PREDICTION_MAX_DISPATCHES": 5,
    "CXR_INFERENCE_BATCH_SIZE": 8,  # the CPU default, explicit: the scenarios count on batches
    "CXR_WORKER_WARM_POLL_S": 1,
    # Not niced: on a machine loaded by other work, a niced worker waits minutes for the CPU
    # (to import torch, to start a task) and misses the reconciler's messages, which expire
    # after CXR_RECONCILE_EVERY_S. The scenarios are about faults, not about priorities.
    "CXR_WORKER_NICE": 0,
}


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


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bindir() -> Path | None:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for bindir in reversed(candidates):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    return None


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


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


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


class PrivatePostgres:
    """A throw-away PostgreSQL cluster: initdb in a temp dir, its own port, stoppable."""

    def __init__(self, root: Path, bindir: Path):
        self.root, self.bindir = root, bindir
        self.data, self.sockdir, self.log = root / "data", root / "sock", root / "postgres.log"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
        self.sockdir.mkdir(parents=True, exist_ok=True)
        if self.user:
            import pwd

            pw = pwd.getpwnam(self.user)
            for path in (root, self.sockdir):
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def url(self, db: str = "cxr") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def _run(self, *args: str, timeout: float = 60) -> str:
        kwargs = {"user": self.user, "group": self.user, "extra_groups": []} if self.user else {}
        out = self.root / "pg_ctl.out"
        with open(out, "ab") as fh:
            done = subprocess.run(
                [str(self.bindir / args[0]), *args[1:]],
                cwd=self.root,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                start_new_session=True,
                env={**os.environ, "LC_ALL": "C"},
                **kwargs,
            )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}): "
                f"{out.read_text(errors='replace')[-2000:]}"
            )
        return out.read_text(errors="replace")

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            timeout=120,
        )

    def start(self) -> None:
        options = (
            f"-k {self.sockdir} -c listen_addresses=127.0.0.1 -p {self.port} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=100"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
            timeout=90,
        )

    def stop(self, mode: str = "fast") -> None:
        if self.running_pid() is None:
            return
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", timeout=90)

    def running_pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def is_up(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2) as conn:
                conn.execute("select 1")
            return True
        except psycopg.Error:
            return False

    def createdb(self, name: str) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        pid = self.running_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A private redis-server on its own port, no persistence: a restart starts empty."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket_url(self) -> str:
        """The same server through its unix socket, as `make run` connects to its own Redis."""
        return f"redis+socket://{self.root / 'redis.sock'}"

    def start(self) -> None:
        self.proc = Proc(
            "redis",
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--unixsocket",
                str(self.root / "redis.sock"),
                "--unixsocketperm",
                "700",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--daemonize",
                "no",
            ],
            env=None,
            log_path=self.root / "logs" / "redis.log",
            cwd=self.root,
        ).start()
        wait_for(self.ping, timeout=20, interval=0.05, what="the private Redis to answer")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def ping(self) -> bool:
        import redis

        try:
            client = redis.Redis(
                host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=2
            )
            ok = bool(client.ping())
            client.close()
            return ok
        except redis.exceptions.RedisError:
            return False

    def client(self):
        import redis

        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=2, socket_timeout=5
        )


# --------------------------------------------------------------------------------------------
# HTTP client (stdlib only, loopback only, bounded timeouts)
# --------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class Api:
    def __init__(self, base: str, token: str):
        assert base.startswith("http://127.0.0.1:"), base
        self.base, self.token = base, token
        # No proxies, whatever the environment says: traffic stays on 127.0.0.1.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Response:
        url = path if path.startswith("http") else self.base + path
        assert url.startswith(self.base), url
        req = urllib.request.Request(
            url,
            data=body,
            method=method,
            headers={"Authorization": f"Token {self.token}", **(headers or {})},
        )
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, dict(exc.headers), exc.read())

    def upload(
        self, data: bytes, *, filename: str, patient_id: str, timeout: float = 60
    ) -> Response:
        boundary = uuid.uuid4().hex
        buf = io.BytesIO()
        for name, value in (("patient_id", patient_id), ("view", "PA")):
            buf.write(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        buf.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode()
        )
        buf.write(data)
        buf.write(f"\r\n--{boundary}--\r\n".encode())
        return self.request(
            "POST",
            "/api/v1/studies/",
            body=buf.getvalue(),
            timeout=timeout,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )

    def prediction(self, prediction_id: int) -> dict:
        resp = self.request("GET", f"/api/v1/predictions/{prediction_id}/")
        assert resp.status == 200, (resp.status, resp.body[:500])
        return resp.json()


def png(seed: int, size: int = 128) -> bytes:
    """A small synthetic chest X-ray, distinct bytes per seed (so no de-duplication)."""
    from tests import imagegen

    return imagegen.png_bytes(imagegen.make_xray(size, size, seed=seed))


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


class FaultStack:
    def __init__(self, tmp: Path, pg_root: Path, bindir: Path):
        self.tmp = tmp
        self.logs = tmp / "logs"
        self.media = tmp / "media"
        self.pg = PrivatePostgres(pg_root, bindir)
        self.redis = PrivateRedis(tmp)
        self.procs: list[Proc] = []  # every process ever started, for teardown
        self.workers: list[Proc] = []  # the workers of the current baseline
        self.web: Proc | None = None
        self.beat: Proc | None = None
        self.web_port = free_port()
        self.token = ""
        self.api: Api | None = None
        self._worker_seq = 0
        self.env: dict[str, str] = {}

    # --- setup ------------------------------------------------------------------------------

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.media.mkdir(parents=True, exist_ok=True)
        self.pg.init()
        self.pg.start()
        self.pg.createdb("cxr")
        self.redis.start()
        self.env = self._child_env()
        self.manage("migrate", "--noinput", timeout=300)
        weights = self.tmp / "mobilenet_v2-2.pt"
        self._make_state_dict(weights)
        self.manage(
            "import_model",
            str(weights),
            "--arch",
            "mobilenet_v2",
            "--classes",
            ",".join(CLASSES),
            "--name",
            "faults-mobilenet",
            "--promote",
            timeout=300,
        )
        password = secrets.token_urlsafe(24)
        self.manage(
            "create_user",
            "faults-rad",
            "--role",
            "radiologist",
            extra_env={"CXR_NEW_USER_PASSWORD": password},
        )
        out = self.manage("create_token", "faults-rad", "--name", "fault tests")
        assert re.fullmatch(r"\w+", out.strip()), f"create_token printed no token: {out!r}"
        self.token = out.strip()
        self.api = Api(f"http://127.0.0.1:{self.web_port}", self.token)
        self.start_web()
        self.start_beat()
        for _ in range(BASE_WORKERS):
            self.start_worker(wait=False)
        for worker in self.workers:
            self.wait_worker_ready(worker)

    def _child_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CXR_", "CELERY_", "DJANGO_", "PYTEST_"))
            and k
            not in (
                "DATABASE_URL",
                "SECRET_KEY",
                "DEBUG",
                "ALLOWED_HOSTS",
                "MEDIA_ROOT",
                "STATIC_ROOT",
                "LOG_LEVEL",
            )
        }
        env.update(
            {
                "SECRET_KEY": secrets.token_urlsafe(50),
                "DEBUG": "false",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "DATABASE_URL": self.pg.url(),
                # The app's processes go through the unix socket, as under `make run` (a lost broker
                # takes a different path in kombu there); the tests look through TCP.
                "CELERY_BROKER_URL": self.redis.socket_url,
                "MEDIA_ROOT": str(self.media),
                "CXR_VAR_DIR": str(self.tmp / "var"),
                "STATIC_ROOT": str(self.tmp / "static"),
                "CXR_FAULT_INJECTION": "true",
                "CXR_TORCH_THREADS": "1",
                "LOG_LEVEL": "INFO",
                "DJANGO_SETTINGS_MODULE": "cxrweb.settings",
                "PYTHONUNBUFFERED": "1",
                **{k: str(v) for k, v in TIMINGS.items()},
            }
        )
        return env

    @staticmethod
    def _make_state_dict(path: Path) -> None:
        import torch
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.mobilenet_v2(weights=None, num_classes=len(CLASSES))
        torch.save(model.state_dict(), path)

    def manage(self, *args: str, timeout: float = 120, extra_env: dict | None = None) -> str:
        done = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=REPO,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, (
            f"manage.py {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
        return done.stdout

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        proc = Proc(name, argv, env=self.env, log_path=self.logs / f"{name}.log").start()
        self.procs.append(proc)
        return proc

    def start_web(self) -> Proc:
        self.web = self._spawn(
            "gunicorn",
            [
                PYTHON,
                "-m",
                "gunicorn",
                "cxrweb.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.web_port}",
                "--workers",
                "2",
                "--timeout",
                "60",
                "--graceful-timeout",
                "5",
            ],
        )

        def answering() -> bool:
            assert self.web.alive(), f"gunicorn exited:\n{self.web.log_tail()}"
            try:
                return self.api.request("GET", "/api/v1/predictions/0/", timeout=5).status in (
                    401,
                    403,
                    404,
                )
            except OSError:
                return False

        wait_for(answering, timeout=180, interval=0.2, what="gunicorn to answer")
        return self.web

    def start_beat(self) -> Proc:
        self.beat = self._spawn(
            "beat",
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "cxrweb",
                "beat",
                "-s",
                str(self.tmp / "beat-schedule"),
                "--loglevel",
                "INFO",
            ],
        )
        return self.beat

    def start_worker(
        self, *, wait: bool = True, hostname: str | None = None, concurrency: int = 1
    ) -> Proc:
        """A new Celery worker in its own process group. `hostname` runs it under another host
        name (a UTS namespace, `unshare -u`), as if it ran on another machine."""
        self._worker_seq += 1
        name = f"w{self._worker_seq}"
        argv = [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "cxrweb",
            "worker",
            "-Q",
            "inference,maintenance",
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "-n",
            f"{name}@%h",
            "--loglevel",
            "INFO",
        ]
        if hostname:
            argv = ["unshare", "-u", "sh", "-c", f'hostname {hostname} && exec "$0" "$@"', *argv]
        worker = self._spawn(name, argv)
        self.workers.append(worker)
        if wait:
            self.wait_worker_ready(worker)
        return worker

    def wait_worker_ready(self, worker: Proc, timeout: float = 300) -> None:
        def ready() -> bool:
            assert worker.alive(), f"{worker.name} exited:\n{worker.log_tail()}"
            return " ready." in worker.log_text() and bool(worker.children())

        wait_for(ready, timeout=timeout, interval=0.2, what=f"worker {worker.name} to be ready")
        if not getattr(worker, "first_children", None):
            worker.first_children = set(worker.children())

    @staticmethod
    def worker_intact(worker: Proc) -> bool:
        """Alive, and still running the pool child it started with: a worker that lost its
        child is replaced between tests (see test_worker_loss: its new children never come up)."""
        first = getattr(worker, "first_children", None)
        return worker.alive() and (first is None or set(worker.children()) == first)

    def worker_for_pid(self, pid: int) -> Proc | None:
        for worker in self.workers:
            if worker.alive() and (worker.pid == pid or pid in worker.children()):
                return worker
        return None

    # --- baseline between tests --------------------------------------------------------------

    def ensure_baseline(self, n_workers: int = BASE_WORKERS) -> None:
        if self.pg.running_pid() is None or not self.pg.is_up():
            self.pg.start()
        if not self.redis.alive() or not self.redis.ping():
            self.redis.stop()
            self.redis.start()
        if self.web is None or not self.web.alive():
            self.start_web()
        if self.beat is None or not self.beat.alive():
            self.start_beat()
        for damaged in [w for w in self.workers if not self.worker_intact(w)]:
            damaged.stop(timeout=10)
        self.workers = [w for w in self.workers if w.alive()]
        for extra in self.workers[n_workers:]:
            extra.stop()
        self.workers = self.workers[:n_workers]
        while len(self.workers) < n_workers:
            self.start_worker(wait=False)
        for worker in self.workers:
            self.wait_worker_ready(worker)

    # --- teardown -----------------------------------------------------------------------------

    def stop(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)
        with contextlib.suppress(Exception):
            self.redis.stop()
        self.pg.destroy()

    def logs_tail(self, lines: int = 40) -> str:
        parts = []
        for proc in [*self.procs, *([self.redis.proc] if self.redis.proc else [])]:
            state = "alive" if proc.alive() else f"exited {proc.popen.poll()}"
            parts.append(
                f"===== {proc.name} (pid {proc.popen.pid}, {state}) "
                f"{proc.log_path} =====\n{proc.log_tail(lines)}"
            )
        with contextlib.suppress(OSError):
            tail = self.pg.log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"===== postgres {self.pg.log} =====\n" + "\n".join(tail))
        return "\n".join(parts)

    # --- reading the private database ---------------------------------------------------------

    def sql(self, query: str, params: tuple | list = ()) -> list[dict]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(
            self.pg.url(), connect_timeout=5, autocommit=True, row_factory=dict_row
        ) as conn:
            return conn.execute(query, params or None).fetchall()

    def predictions(self, ids: list[int]) -> dict[int, dict]:
        rows = self.sql(
            "SELECT id, status, attempts, dispatches, worker, error, image_id, queued_at, "
            "started_at, finished_at, last_dispatched_at FROM diagnosis_prediction "
            "WHERE id = ANY(%s)",
            (list(ids),),
        )
        return {row["id"]: row for row in rows}

    def predictions_per_image(self, image_ids: list[int]) -> dict[int, int]:
        rows = self.sql(
            "SELECT image_id, count(*) AS n FROM diagnosis_prediction WHERE image_id = ANY(%s) "
            "GROUP BY image_id",
            (list(image_ids),),
        )
        return {row["image_id"]: row["n"] for row in rows}

    def media_files(self) -> set[str]:
        return {str(p.relative_to(self.media)) for p in self.media.rglob("*") if p.is_file()}

    # --- uploads -----------------------------------------------------------------------------

    def upload(self, data: bytes, *, filename: str, patient_id: str) -> dict:
        """Upload through the API; 201 expected. Returns {"prediction_id", "image_id", "body"}."""
        resp = self.api.upload(data, filename=filename, patient_id=patient_id)
        assert resp.status == 201, (resp.status, resp.body[:1000])
        body = resp.json()
        return {"prediction_id": body["prediction_id"], "image_id": body["image_id"], "body": body}

    def wait_finished(self, ids: list[int], *, timeout: float, what: str = "") -> dict[int, dict]:
        """Wait until every prediction in `ids` is done or failed; returns their rows."""
        ids = list(ids)

        def finished():
            rows = self.predictions(ids)
            if len(rows) == len(ids) and all(
                r["status"] in ("done", "failed") for r in rows.values()
            ):
                return rows
            return None

        try:
            return wait_for(
                finished,
                timeout=timeout,
                interval=0.5,
                what=what or f"{len(ids)} predictions to finish",
            )
        except AssertionError as exc:
            rows = self.predictions(ids)
            counts: dict[str, int] = {}
            for row in rows.values():
                counts[row["status"]] = counts.get(row["status"], 0) + 1
            unfinished = [r for r in rows.values() if r["status"] not in ("done", "failed")][:5]
            raise AssertionError(f"{exc}; statuses {counts}; e.g. {unfinished}") from None


@pytest.fixture(scope="session")
def fault_stack(tmp_path_factory) -> Iterator[FaultStack]:
    bindir = _pg_bindir()
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


# --------------------------------------------------------------------------------------------
# Catching a prediction mid-flight
# --------------------------------------------------------------------------------------------


@dataclass
class MidFlight:
    prediction_id: int
    image_id: int
    pid: int  # the pool child running it, left stopped (SIGSTOP)
    worker_identity: str  # "host:pid" as the row records it
    worker: Proc  # the Celery worker (main process) the child belongs to
    started_at: object  # the row's started_at when it was caught


_ROW = "SELECT status, worker, started_at FROM diagnosis_prediction WHERE id = %s"


def freeze_when_running(
    stack: FaultStack,
    conn,
    prediction_id: int,
    *,
    timeout: float = 120,
    not_by: tuple[str, ...] = (),
) -> MidFlight | None:
    """Wait until the prediction is *running* (claimed by a process not in `not_by`), and freeze
    it there: SIGSTOP the pool child named by the row's `worker` field, then read the row again
    a moment later. If it still says running by that child, the child is stopped between its
    claim and its result, i.e. mid-prediction: return it, left stopped. If the prediction
    finished first, return None (the child is resumed)."""
    deadline = time.monotonic() + timeout
    skip = set(not_by)
    while True:
        status, worker_identity, started_at = conn.execute(_ROW, (prediction_id,)).fetchone()
        if status in ("done", "failed"):
            return None
        if status == "running" and worker_identity not in skip:
            pid = int(worker_identity.rsplit(":", 1)[1])
            worker = stack.worker_for_pid(pid)
            if worker is not None and pid != worker.pid:
                break
            # Claimed by a child of a worker the test is retiring (it respawned a child that
            # took the redelivered message before the worker was stopped): that child dies with
            # its worker; wait for the next claim.
            skip.add(worker_identity)
        assert time.monotonic() < deadline, (
            f"prediction {prediction_id} still {status} after {timeout}s"
        )
        time.sleep(0.003)
    os.kill(pid, signal.SIGSTOP)
    time.sleep(0.2)  # anything the child had already sent reaches the database
    status, again, _ = conn.execute(_ROW, (prediction_id,)).fetchone()
    if status == "running" and again == worker_identity:
        image_id = stack.predictions([prediction_id])[prediction_id]["image_id"]
        return MidFlight(prediction_id, image_id, pid, worker_identity, worker, started_at)
    os.kill(pid, signal.SIGCONT)
    return None


def catch_mid_flight(
    stack: FaultStack, *, patient_id: str, seeds, size: int = 384, timeout: float = 120
) -> MidFlight:
    """Upload images one at a time until one is caught mid-prediction (see
    freeze_when_running); its pool child is left stopped. The files are named slow-*.png: with
    CXR_FAULT_INJECTION the model takes 3 s over each, so a run is never over before the test
    has seen it start (also a redelivered one, picked up while the test is still replacing the
    worker it killed)."""
    import psycopg

    with psycopg.connect(stack.pg.url(), autocommit=True, connect_timeout=5) as conn:
        for seed in seeds:
            up = stack.upload(
                png(seed, size=size), filename=f"slow-{seed}.png", patient_id=patient_id
            )
            caught = freeze_when_running(stack, conn, up["prediction_id"], timeout=timeout)
            if caught is not None:
                return caught
    raise AssertionError("never caught a prediction mid-flight")


def assert_heatmap_fetchable(stack: FaultStack, prediction_id: int) -> None:
    body = stack.api.prediction(prediction_id)
    assert body["status"] == "done", body
    assert body["heatmap_url"], body
    resp = stack.api.request("GET", body["heatmap_url"])
    assert resp.status == 200, (resp.status, resp.body[:300])
    assert resp.headers.get("Content-Type") == "image/png", resp.headers
    assert resp.body.startswith(b"\x89PNG\r\n\x1a\n")
