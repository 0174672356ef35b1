"""The ML core is plain Python: importable and testable without Django (and cheap to import)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import training.ml

REPO_ROOT = Path(__file__).resolve().parents[3]
ML_PACKAGE = REPO_ROOT / "training" / "ml"


def _env_without_django() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env_without_django(),
    )


def test_importing_the_ml_core_does_not_import_django() -> None:
    result = _run(
        "import sys, training.ml, training.ml.inference, training.ml.checkpoint\n"
        "assert 'django' not in sys.modules, sorted(m for m in sys.modules if 'django' in m)\n"
        "print('ok')"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


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


def test_no_module_of_the_ml_core_imports_django_even_lazily() -> None:
    offenders = []
    for path in sorted(ML_PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "django"]
    assert list(ML_PACKAGE.glob("*.py")), "the scan found no files"
    assert offenders == []


def test_the_package_and_preprocessing_import_without_torch() -> None:
    result = _run(
        "import sys, training.ml\n"
        "from training.ml import Preprocessing\n"
        "Preprocessing.from_dict({'input_size': 224})\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_public_name_resolves() -> None:
    missing = [name for name in training.ml.__all__ if getattr(training.ml, name, None) is None]
    assert missing == []
    assert "Predictor" in training.ml.__all__ and "build_model" in training.ml.__all__


def test_the_torch_free_config_matches_the_ml_core():
    """training.ml.config repeats a few names so that the web process needs no torch."""
    import subprocess
    import sys

    from training.ml import calibration, config, transforms
    from training.ml.architectures import ARCHITECTURES

    assert config.ARCHITECTURE_NAMES == ARCHITECTURES
    assert config.AUGMENTATIONS == transforms.AUGMENTATIONS
    assert config.THRESHOLD_STRATEGIES == calibration.THRESHOLD_STRATEGIES
    code = ("import sys, training.ml.config as c; c.TrainConfig(arch='resnet18', epochs=2); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
