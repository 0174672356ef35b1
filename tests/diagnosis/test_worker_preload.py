"""The worker's main process imports the ML libraries before the pool forks, and a forked pool
process can still run a model on them."""

from __future__ import annotations

import os

from tests.conftest import run_python

# In a child process: preload as the worker's main process does, then fork a "pool process"
# that runs a prediction, as Celery's prefork pool would.
SCRIPT = """
import logging, os, sys
import django
django.setup()
assert "torch" not in sys.modules
from diagnosis.worker.process import _preload_ml
_preload_ml(logging.getLogger("test"))
import torch
assert "pytorch_grad_cam" in sys.modules and "cv2" in sys.modules
assert not torch.cuda.is_initialized()
pid = os.fork()
if pid == 0:
    import torchvision
    from PIL import Image
    from training.ml.infer.predictor import Predictor
    from training.ml.preprocessing import Preprocessing
    torch.set_num_threads(1)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=2)
    predictor = Predictor(model, arch="mobilenet_v2", classes=["a", "b"],
                          preprocessing=Preprocessing())
    result = predictor.predict([Image.new("L", (64, 48), 128)])[0]
    os._exit(0 if result.cam.shape == (224, 224) and result.label in ("a", "b") else 3)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status))
"""


def test_the_pool_process_runs_a_model_on_libraries_its_parent_imported() -> None:
    done = run_python(
        SCRIPT,
        timeout=300,
        env={
            "DJANGO_SETTINGS_MODULE": "cxrweb.settings",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or "test-only",
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "child exit 0", done.stdout
