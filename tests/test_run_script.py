"""`make run` (scripts/run.sh) starts inference and training in separate Celery workers, so that
inference never waits for training (issue #22, item 7).

The script itself runs, against a stand-in for the virtualenv's python that records each command
line (and the worker's CXR_WORKER_NICE) instead of starting it: the real command lines, cheaply.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from django.conf import settings

REPO = Path(__file__).resolve().parent.parent

FAKE_PYTHON = """#!/usr/bin/env bash
printf 'NICE=%s %s\\n' "${CXR_WORKER_NICE:-unset}" "$*" >> "$CXR_FAKE_LOG"
case "$2" in
  celery|dicom_scp) exec sleep 30 ;;  # a worker, the SCP: run until the script stops them
  gunicorn) sleep 1; exit 0 ;;        # the web server stops: the script stops everything
esac
"""


def _commands(tmp_path: Path) -> list[tuple[str, list[str]]]:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "run.sh", tmp_path / "scripts" / "run.sh")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    (tmp_path / ".env").write_text("SECRET_KEY=x\n")
    log = tmp_path / "commands.log"
    subprocess.run(
        ["bash", str(tmp_path / "scripts" / "run.sh")],
        cwd=tmp_path,
        timeout=60,
        check=False,
        capture_output=True,
        env={
            "PATH": "/usr/bin:/bin",
            "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
            "CXR_FAKE_LOG": str(log),
            "CXR_VAR_DIR": str(tmp_path / "var"),
            "CXR_WORKERS": "4",
        },
    )
    lines = log.read_text().splitlines()
    return [
        (line.split(" ", 1)[0].removeprefix("NICE="), shlex.split(line.split(" ", 1)[1]))
        for line in lines
    ]


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_run_starts_an_inference_worker_and_a_training_worker_of_one_process(tmp_path):
    commands = _commands(tmp_path)
    workers = {
        _option(argv, "-Q"): (nice, argv)
        for nice, argv in commands
        if argv[:2] == ["-m", "celery"] and "worker" in argv
    }
    assert set(workers) == {"inference,maintenance", "training"}, commands

    nice, inference = workers["inference,maintenance"]
    assert _option(inference, "--concurrency") == "4"  # CXR_WORKERS: one per core by default
    assert "-B" in inference  # the one beat (the reconcilers)
    assert nice == "unset"  # the app's CXR_WORKER_NICE (10)

    nice, training = workers["training"]
    assert _option(training, "--concurrency") == "1"
    assert "-B" not in training
    assert int(nice) > settings.CXR_WORKER_NICE  # takes only the CPU that inference leaves
    assert _option(training, "--hostname") != _option(inference, "--hostname")
    assert any(argv[:2] == ["-m", "gunicorn"] for _, argv in commands)


def test_every_routed_queue_has_a_worker_and_training_has_its_own(tmp_path):
    served = {}
    for _, argv in _commands(tmp_path):
        if argv[:2] == ["-m", "celery"] and "worker" in argv:
            for queue in _option(argv, "-Q").split(","):
                served[queue] = _option(argv, "--hostname")
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert routed | {settings.CELERY_TASK_DEFAULT_QUEUE} <= set(served)
    assert served["training"] != served["inference"]


def test_a_training_run_is_acknowledged_early_whatever_the_global_late_ack():
    from training.tasks import run_training

    # A run outlasts the broker's visibility timeout: a late ack would have Redis hand it out
    # again while it runs (see run_training's docstring).
    assert settings.CELERY_TASK_ACKS_LATE
    assert (
        settings.CXR_TRAINING_TIME_LIMIT
        > settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    )
    assert run_training.acks_late is False
    assert run_training.time_limit == settings.CXR_TRAINING_TIME_LIMIT


def test_run_starts_the_dicom_scp_beside_the_web_server(tmp_path):
    commands = [argv for _, argv in _commands(tmp_path)]
    assert ["manage.py", "dicom_scp"] in commands, commands
