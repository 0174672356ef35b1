"""A private PostgreSQL cluster and a private Redis for the fault tests, both stoppable."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.conftest import wait_for
from tests.faults.processes import Proc, free_port, pid_alive

REDIS_SERVER = shutil.which(
    "redis-server", path="/usr/bin:/usr/local/bin:" + os.environ.get("PATH", "")
)


def pg_bindir() -> Path | None:
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
