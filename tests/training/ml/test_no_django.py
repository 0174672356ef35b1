"""The ML core is plain Python: every module of training.ml imports without Django, without the
apps around it (diagnosis, cxrweb, the Django parts of training), and, for what the web process
uses, without torch."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
ML_PACKAGE = REPO_ROOT / "training" / "ml"

# Imports every module of training.ml in one fresh interpreter; prints which module first loaded
# a forbidden one.
WALK = """
import importlib, json, pkgutil, sys

def forbidden(name):
    root = name.split(".")[0]
    if root in ("django", "diagnosis", "cxrweb"):
        return True
    return root == "training" and name != "training" and name.split(".")[:2] != ["training", "ml"]

import training.ml
modules = ["training.ml"] + [m.name for m in pkgutil.walk_packages(training.ml.__path__, "training.ml.")]
loaded = set(sys.modules)
first_loaded_by = {}
for name in modules:
    importlib.import_module(name)
    for new in sorted(set(sys.modules) - loaded):
        first_loaded_by[new] = name
    loaded = set(sys.modules)
offences = {m: by for m, by in first_loaded_by.items() if forbidden(m)}
offences.update({m: "before the walk" for m in sys.modules
                 if forbidden(m) and m not in first_loaded_by})
print(json.dumps({"modules": modules, "offences": offences}))
"""


def _env_without_django() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env_without_django(),
    )


def test_every_module_of_the_ml_core_imports_without_django_or_the_apps() -> None:
    result = _run(WALK)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {
        "training.ml.preprocessing",
        "training.ml.models.speedups",
        "training.ml.train.fit",
        "training.ml.infer.predictor",
        "training.ml.infer.render",
    } <= set(report["modules"])
    assert report["offences"] == {}, "forbidden module: the training.ml module that loaded it"


def test_importing_the_imaging_core_loads_neither_the_apps_nor_torch() -> None:
    # The upload view decodes with it, and the request path must never load torch.
    result = _run(
        "import sys, training.ml.imaging\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "             {'django', 'diagnosis', 'cxrweb', 'torch', 'torchvision'})\n"
        "assert not bad, bad\n"
        "print('ok')"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_no_module_of_the_ml_core_imports_django_or_the_apps_even_lazily() -> None:
    offenders = []
    for path in sorted(ML_PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                outside_ml = parts[0] == "training" and parts[1:2] != ["ml"]
                if parts[0] in ("django", "diagnosis", "cxrweb") or outside_ml:
                    offenders.append(f"{path.relative_to(ML_PACKAGE)}: {name}")
    assert len(list(ML_PACKAGE.rglob("*.py"))) > 20, "the scan found too few files"
    assert offenders == []


def test_the_packages_preprocessing_and_the_config_import_without_torch() -> None:
    result = _run(
        "import sys\n"
        "import training.ml, training.ml.models, training.ml.train, training.ml.infer\n"
        "from training.ml.preprocessing import Preprocessing\n"
        "from training.ml.train.config import TrainConfig\n"
        "Preprocessing.from_dict({'input_size': 224})\n"
        "TrainConfig(arch='resnet18', epochs=2)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "print('ok')"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_torch_free_config_matches_the_ml_core() -> None:
    """training.ml.train.config repeats a few names so that the web process needs no torch."""
    from training.ml.models.architectures import ARCHITECTURES
    from training.ml.train import calibration, config, transforms

    assert config.ARCHITECTURE_NAMES == ARCHITECTURES
    assert config.AUGMENTATIONS == transforms.AUGMENTATIONS
    assert config.THRESHOLD_STRATEGIES == calibration.THRESHOLD_STRATEGIES
