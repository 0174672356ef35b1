"""The whole app as real processes: private PostgreSQL and Redis, gunicorn, Celery workers
and beat, with the API client and the private database's rows the tests read."""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
from pathlib import Path

from tests.conftest import wait_for
from tests.faults.client import Api
from tests.faults.config import BASE_WORKERS, CLASSES, child_env
from tests.faults.processes import PYTHON, REPO, Proc, free_port
from tests.faults.services import PrivatePostgres, PrivateRedis


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
        self.env = child_env(
            tmp=self.tmp,
            media=self.media,
            database_url=self.pg.url(),
            broker_url=self.redis.socket_url,
        )
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
            "--override-reason",
            "fault tests: random weights",
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

    def _spawn(self, name: str, argv: list[str], extra_env: dict | None = None) -> Proc:
        env = {**self.env, **(extra_env or {})}
        proc = Proc(name, argv, env=env, log_path=self.logs / f"{name}.log").start()
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
        self,
        *,
        wait: bool = True,
        hostname: str | None = None,
        concurrency: int = 1,
        extra_env: dict | None = None,
    ) -> Proc:
        """A new Celery worker in its own process group. `hostname` runs it under another host
        name (a UTS namespace, `unshare -u`), as if it ran on another machine; `extra_env`
        configures it beyond the stack's settings."""
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
        worker = self._spawn(name, argv, extra_env)
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
