"""Start the whole app from scratch on loopback, the way production runs it, and stop it again.

PostgreSQL (a fresh database), Redis (a flushed database), a temporary MEDIA_ROOT, migrate,
collectstatic, a promoted model version (import_model), a radiologist with an API token,
gunicorn, and N Celery workers (`-Q inference --concurrency 1 --pool prefork`; the queues are
``StackConfig.queues``), and on request the training queue's own worker. Every child runs
in its own process group, so stopping it stops its children too; every wait is bounded.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench.process import ManagedProcess, free_port, wait_ready
from bench.stack_services import (
    StackError,
    claim_broker,
    create_database,
    drop_database,
    require_loopback,
)

log = logging.getLogger("bench.stack")
# diagnosis.worker.compute's log line for a model loaded by a pool process.
_LOADED = re.compile(r"loaded model version \S+ \(\S+\) on \S+: (.*)$")


@dataclass
class StackConfig:
    repo: Path
    python: Path
    arch: str
    classes: list[str]
    backbone_weights: Path | None
    workers: int = 1
    concurrency: int = 1  # pool processes per worker
    web_workers: int = 2
    web_threads: int = 1
    database_url: str | None = None  # an existing database: used as is, never dropped
    pg_admin_url: str = "postgres://postgres@127.0.0.1:5432/postgres"
    broker_url: str = "redis://127.0.0.1:6379/14"
    torch_threads: int = 0  # 0: the app's default (cores / worker concurrency)
    batch_size: int = 0  # 0: the app's default (by device)
    model_server: str = "auto"  # CXR_MODEL_SERVER: auto (one per GPU), on, off
    # Appended to the children's DATABASE_URL (django-environ options, e.g. conn_max_age=60):
    # a knob for experiments, the app's default is none.
    db_url_query: str = ""
    log_level: str = "INFO"
    keep: bool = False
    seed: int = 0
    queues: str = "inference"  # what the --workers workers consume (-Q)
    # How long a child may take to start. Generous: on a busy host a worker, which lowers its
    # priority before importing torch, took minutes (bench/process.py, SLOW_START_HINT); a
    # child that dies ends the wait at once.
    ready_timeout_s: float = 600.0
    worker_nice: int | None = None  # CXR_WORKER_NICE for the workers; None: the app's default


@dataclass
class Stack:
    cfg: StackConfig
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cxr-bench-")))
    processes: list[ManagedProcess] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    created_db: str | None = None
    database_url: str = ""
    port: int = 0
    token: str = ""
    model_version: str = ""
    _broker_lock: IO[str] | None = None

    @property
    def plain_weights(self) -> Path:
        """The model version's weights as a plain torchvision state_dict (bench.ml weights)."""
        return self.tmp / f"{self.cfg.arch}-bench.pt"

    # --- start -----------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        require_loopback(cfg.broker_url, "--broker-url")
        self.database_url = cfg.database_url or self._create_database()
        self._broker_lock = claim_broker(cfg.broker_url)
        self.env = self._child_env()
        (self.tmp / "media").mkdir()
        (self.tmp / "logs").mkdir()
        self.manage("migrate", "--noinput", timeout_s=300)
        self.manage("collectstatic", "--noinput", "-v", "0", timeout_s=300)
        self._import_model()
        self._create_radiologist()
        self._start_gunicorn()
        for i in range(cfg.workers):
            self._start_worker(i)
        self._wait_workers_ready()

    def _create_database(self) -> str:
        self.created_db, url = create_database(self.cfg.pg_admin_url)
        log.info("created database %s", self.created_db)
        return url

    def _child_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CXR_", "CELERY_", "DJANGO_")) and k not in ("DATABASE_URL",)
        }
        env.update(
            {
                "SECRET_KEY": secrets.token_urlsafe(50),
                "DEBUG": "false",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "DATABASE_URL": self.database_url
                + (f"?{self.cfg.db_url_query}" if self.cfg.db_url_query else ""),
                "CELERY_BROKER_URL": self.cfg.broker_url,
                "CXR_VAR_DIR": str(self.tmp / "var"),
                "MEDIA_ROOT": str(self.tmp / "media"),
                "STATIC_ROOT": str(self.tmp / "static"),
                # Explicit, so a developer's .env (read with overwrite=False) cannot change it.
                "CXR_TORCH_THREADS": str(self.cfg.torch_threads),
                "CXR_INFERENCE_BATCH_SIZE": str(self.cfg.batch_size),
                "CXR_MODEL_SERVER": self.cfg.model_server,
                "LOG_LEVEL": self.cfg.log_level,
                "DJANGO_SETTINGS_MODULE": "cxrweb.settings",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.cfg.worker_nice is not None:
            env["CXR_WORKER_NICE"] = str(self.cfg.worker_nice)
        return env

    def manage(self, *args: str, timeout_s: float = 120) -> str:
        """Run `manage.py ARGS` with the children's environment; its stdout, or StackError."""
        return self.run_python(["manage.py", *args], timeout_s=timeout_s)

    def run_python(self, args: list[str], timeout_s: float = 120) -> str:
        cmd = [str(self.cfg.python), *args]
        try:
            done = subprocess.run(
                cmd,
                cwd=self.cfg.repo,
                env=self.env or None,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"{' '.join(args)} did not finish within {timeout_s:.0f} s") from exc
        if done.returncode != 0:
            raise StackError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done.stdout

    def _import_model(self) -> None:
        cfg = self.cfg
        weights = self.plain_weights
        args = [
            "-m",
            "bench.ml",
            "weights",
            "--arch",
            cfg.arch,
            "--classes",
            ",".join(cfg.classes),
            "--out",
            str(weights),
            "--seed",
            str(cfg.seed),
        ]
        if cfg.backbone_weights:
            args += ["--backbone-weights", str(cfg.backbone_weights)]
        print(self.run_python(args, timeout_s=300).strip())
        self.model_version = f"bench-{cfg.arch}-{secrets.token_hex(3)}"
        out = self.manage(
            "import_model",
            str(weights),
            "--arch",
            cfg.arch,
            "--classes",
            ",".join(cfg.classes),
            "--name",
            self.model_version,
            "--promote",
            "--reason",
            "benchmark",
            "--override-reason",
            "benchmark weights: no clinical use",
            timeout_s=300,
        )
        print(out.strip())

    def _create_radiologist(self) -> None:
        self.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import Group, User; "
            "u = User.objects.create_user('bench-radiologist'); "
            "u.groups.add(Group.objects.get(name='radiologist'))",
        )
        out = self.manage("create_token", "bench-radiologist", "--name", "bench")
        if not re.fullmatch(r"\w+", out.strip()):
            raise StackError(f"create_token printed no token: {out!r}")
        self.token = out.strip()

    def _spawn(
        self, name: str, args: list[str], extra_env: dict[str, str] | None = None
    ) -> ManagedProcess:
        log_path = self.tmp / "logs" / f"{name}.log"
        with log_path.open("wb") as fh:
            popen = subprocess.Popen(
                [str(self.cfg.python), *args],
                cwd=self.cfg.repo,
                env={**self.env, **(extra_env or {})},
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = ManagedProcess(name, popen, log_path)
        self.processes.append(proc)
        return proc

    def _start_gunicorn(self) -> None:
        self.port = free_port()
        self._spawn(
            "gunicorn",
            [
                "-m",
                "gunicorn",
                "cxrweb.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.cfg.web_workers),
                "--threads",
                str(self.cfg.web_threads),
                "--timeout",
                "120",
            ],
        )

    def _start_worker(self, index: int) -> None:
        self._spawn(
            f"worker{index}",
            [
                "-m",
                "celery",
                "-A",
                "cxrweb",
                "worker",
                "-Q",
                self.cfg.queues,
                "--concurrency",
                str(self.cfg.concurrency),
                "--pool",
                "prefork",
                "--hostname",
                f"bench{index}-{secrets.token_hex(2)}@%h",
                "--loglevel",
                self.cfg.log_level,
            ],
        )

    def start_training_worker(
        self, nice: int = 19, timeout_s: float | None = None
    ) -> ManagedProcess:
        """The training queue's own worker, as `make run` starts it (scripts/run.sh): one pool
        process at the lowest CPU priority. Not one of ``workers`` (never paused)."""
        proc = self._spawn(
            "training-worker",
            [
                "-m",
                "celery",
                "-A",
                "cxrweb",
                "worker",
                "-Q",
                "training",
                "--concurrency",
                "1",
                "--pool",
                "prefork",
                "--hostname",
                f"training-{secrets.token_hex(2)}@%h",
                "--loglevel",
                self.cfg.log_level,
            ],
            extra_env={"CXR_WORKER_NICE": str(nice)},
        )
        self._wait_workers_ready(timeout_s, [proc])
        return proc

    def _wait_workers_ready(
        self, timeout_s: float | None = None, procs: list[ManagedProcess] | None = None
    ) -> None:
        """Until each worker logs " ready." (Celery's banner line); at once if one exits, or
        if the web server has (both with the log's tail)."""
        wait_ready(
            list(self.workers if procs is None else procs),
            lambda proc: " ready." in proc.log_path.read_text(errors="replace"),
            self.cfg.ready_timeout_s if timeout_s is None else timeout_s,
            also_alive=self.check_alive,
        )

    # --- while running ---------------------------------------------------------------------

    @property
    def workers(self) -> list[ManagedProcess]:
        return [p for p in self.processes if p.name.startswith("worker")]

    @property
    def web(self) -> ManagedProcess:
        return next(p for p in self.processes if p.name == "gunicorn")

    def model_executions(self) -> list[str]:
        """How each pool process runs the model, from the workers' logs: one entry per load
        ("frozen graph for ..." or "eager (...)", see training.ml.models.speedups.freeze_below)."""
        found = []
        for proc in self.workers:
            for line in proc.log_path.read_text(errors="replace").splitlines():
                match = _LOADED.search(line)
                if match:
                    found.append(match.group(1).strip())
        return found

    def check_alive(self) -> None:
        for proc in self.processes:
            if not proc.alive():
                raise StackError(f"{proc.name} exited unexpectedly:\n{proc.log_tail()}")

    def pause_workers(self) -> None:
        """SIGSTOP every Celery worker (main and pool children): the queue grows meanwhile."""
        for proc in self.workers:
            proc.signal_group(signal.SIGSTOP)

    def resume_workers(self) -> None:
        for proc in self.workers:
            proc.signal_group(signal.SIGCONT)

    # --- stop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every child (workers first), drop the database, remove the temp dir (unless keep).

        Safe to call more than once and after a partial start.
        """
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others
                log.exception("stopping %s", proc.name)
        if self.created_db and not self.cfg.keep:
            self._drop_database()
        if self._broker_lock is not None:
            self._broker_lock.close()  # releases the flock
            self._broker_lock = None
        if self.cfg.keep:
            print(f"--keep: database {self.created_db or self.database_url}, files in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _drop_database(self) -> None:
        try:
            drop_database(self.cfg.pg_admin_url, self.created_db)
            log.info("dropped database %s", self.created_db)
            self.created_db = None
        except Exception:  # noqa: BLE001 - report and go on: the run's figures are still good
            log.exception("could not drop database %s", self.created_db)

    def save_logs(self, dest: Path) -> None:
        """Copy the children's logs next to the report (for post-mortems)."""
        dest.mkdir(parents=True, exist_ok=True)
        for path in (self.tmp / "logs").glob("*.log"):
            shutil.copy(path, dest / path.name)
