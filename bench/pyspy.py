"""Sampling profiles of app processes with py-spy (optional), summarised as "where the time goes".

py-spy is not a project dependency: install it outside the venv, e.g.
`pip install --target /tmp/pyspy py-spy`, and pass `--py-spy /tmp/pyspy/bin/py-spy`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

# (label, function name, fragment of its file path): inclusive time of these frames.
WORKER_BUCKETS: list[tuple[str, str, str]] = [
    ("prediction_run (whole task body)", "prediction_run", "diagnosis/worker/run.py"),
    ("prediction_claim (UPDATE + SELECT)", "prediction_claim", "diagnosis/worker/claim.py"),
    (
        "predictions_claim_batch_companions",
        "predictions_claim_batch_companions",
        "diagnosis/worker/claim.py",
    ),
    ("compute_batch", "compute_batch", "diagnosis/worker/compute.py"),
    ("  open_display (decode the stored picture)", "open_display", "diagnosis/worker/compute.py"),
    ("  predictor_for (cache lookup / model load)", "predictor_for", "diagnosis/worker/compute.py"),
    ("  Predictor.predict", "Predictor.predict", "training/ml/infer/predictor.py"),
    ("    batch_model_input (preprocessing)", "batch_model_input", "preprocessing.py"),
    (
        "    GradCAM __call__ (forward+backward+cam)",
        "BaseCAM.__call__",
        "pytorch_grad_cam/base_cam.py",
    ),
    ("      autograd backward", "_engine_run_backward", "torch/autograd/graph.py"),
    ("  render_pngs", "render_pngs", "training/ml/infer/render.py"),
    ("    render_overlay", "render_overlay", "training/ml/infer/predictor.py"),
    ("    cam_to_heatmap_rgba", "cam_to_heatmap_rgba", "training/ml/infer/render.py"),
    ("    png_bytes (PNG encode)", "png_bytes", "training/ml/infer/render.py"),
    ("prediction_finish (files, UPDATE)", "prediction_finish", "diagnosis/worker/finish.py"),
    ("storage save (heatmap files)", "save", "django/core/files/storage"),
    ("refresh_from_db", "refresh_from_db", "django/db/models/base.py"),
    ("new DB connection (CONN_MAX_AGE=0)", "connect", "django/db/backends/base/base.py"),
    ("SQL execute (all)", "execute", "django/db/backends/utils.py"),
    ("celery task tracing", "trace_task", "celery/app/trace.py"),
]
WEB_BUCKETS: list[tuple[str, str, str]] = [
    ("StudyListCreate.post", "StudyListCreate.post", "diagnosis/api.py"),
    ("  form validation + read", "is_valid", "django/forms/forms.py"),
    ("  study_upload", "study_upload", "diagnosis/services/uploads.py"),
    ("    decode_upload", "decode_upload", "training/ml/imaging/"),
    ("    to_png_bytes (display copy)", "to_png_bytes", "training/ml/imaging/"),
    ("    _image_create", "_image_create", "diagnosis/services/uploads.py"),
    ("    storage save", "save", "django/core/files/storage"),
    ("  on_commit -> send_task (dispatch)", "send_task", "celery/app/base.py"),
    ("  study_json", "study_json", "diagnosis/api_json.py"),
    ("PredictionDetail.get", "PredictionDetail.get", "diagnosis/api.py"),
    ("PredictionFile.get (heatmap)", "PredictionFile.get", "diagnosis/api.py"),
    ("SQL execute (all)", "execute", "django/db/backends/utils.py"),
    ("new DB connection (CONN_MAX_AGE=0)", "connect", "django/db/backends/base/base.py"),
    ("token authentication", "authenticate", "rest_framework/authentication.py"),
    ("audit", "audit", "cxrweb/audit/services.py"),
]

_LINE = re.compile(r":\d+\)$")


def find_py_spy(explicit: str | None) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for candidate in (shutil.which("py-spy"), "/tmp/pyspy/bin/py-spy"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class PySpy:
    """`py-spy record` of one process (and its subprocesses) until stop()."""

    def __init__(
        self, exe: str, pid: int, out: Path, rate: int = 100, subprocesses: bool = False
    ) -> None:
        self.out, self.rate = out, rate
        cmd = [
            exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ]
        if subprocesses:
            cmd.append("--subprocesses")
        self.log = out.with_suffix(".log")
        with self.log.open("wb") as fh:
            self.popen = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started = time.monotonic()
        self.seconds = 0.0

    def stop(self, timeout_s: float = 30.0) -> None:
        self.seconds = time.monotonic() - self.started
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGINT)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)


def _frame_key(frame: str) -> str:
    return _LINE.sub(")", frame.strip())


def _matches(frame: str, func: str, file_fragment: str) -> bool:
    """`func` is a function name or a dotted suffix of py-spy's qualified name ("Cls.meth")."""
    name, _, where = frame.partition(" (")
    return (name == func or name.endswith(f".{func}")) and file_fragment in where


def summarize(
    raw: Path,
    buckets: list[tuple[str, str, str]],
    seconds: float,
    rate: int,
    processes: int = 1,
    top: int = 15,
) -> dict:
    """Inclusive share of the named buckets, the top leaf frames, and the active fraction."""
    if not raw.exists():
        return {"error": f"no profile written ({raw.with_suffix('.log').name})"}
    stacks: list[tuple[list[str], int]] = []
    for line in raw.read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        frames = [f for f in head.split(";") if f and not f.startswith(("process ", "thread "))]
        stacks.append((frames, int(count)))
    total = sum(c for _, c in stacks)
    if not total:
        return {"error": "no samples"}
    inclusive: dict[str, int] = {}
    for label, func, fragment in buckets:
        inclusive[label] = sum(
            c for frames, c in stacks if any(_matches(f, func, fragment) for f in frames)
        )
    leaves: Counter[str] = Counter()
    for frames, c in stacks:
        if frames:
            leaves[_frame_key(frames[-1])] += c
    expected = seconds * rate * processes
    return {
        "samples": total,
        "seconds": round(seconds, 1),
        "active_fraction": round(total / expected, 3) if expected else None,
        "inclusive_share": {k: round(v / total, 3) for k, v in inclusive.items()},
        "top_self_frames": [
            {"frame": frame, "share": round(c / total, 3)} for frame, c in leaves.most_common(top)
        ],
    }
