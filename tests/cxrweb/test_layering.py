"""The layers hold: cxrweb's shared parts (audit, roles, permissions, responses, middleware, API
tokens) import neither app, and the training app never imports diagnosis. Only the wiring
(settings, urls, celery) names the apps."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WIRING = {"settings.py", "urls.py", "celery.py", "asgi.py", "wsgi.py"}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def _offenders(files: list[Path], forbidden: set[str]) -> list[str]:
    assert files, "the scan found no files"
    return [f"{path.relative_to(REPO_ROOT)}: {name}" for path in files for name in _imports(path)
            if name.split(".")[0] in forbidden]


def test_cxrweb_s_shared_parts_import_neither_app() -> None:
    files = [p for p in sorted((REPO_ROOT / "cxrweb").rglob("*.py"))
             if not (p.parent == REPO_ROOT / "cxrweb" and p.name in WIRING)]
    assert _offenders(files, {"diagnosis", "training"}) == []


def test_the_training_app_does_not_import_diagnosis() -> None:
    # The ML core (training/ml) has its own guard, tests/training/ml/test_no_django.py.
    files = [p for p in sorted((REPO_ROOT / "training").rglob("*.py"))
             if "ml" not in p.relative_to(REPO_ROOT / "training").parts[:1]]
    assert _offenders(files, {"diagnosis"}) == []
