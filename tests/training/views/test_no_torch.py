"""The web process never imports torch: every training page and form in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO

TORCH_FREE_SCRIPT = textwrap.dedent(
    """
    import os, sys, tempfile
    os.environ["DJANGO_SETTINGS_MODULE"] = "cxrweb.settings"
    os.environ["DATABASE_URL"] = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "db.sqlite3")
    os.environ["MEDIA_ROOT"] = tempfile.mkdtemp()
    os.environ["STATIC_ROOT"] = tempfile.mkdtemp()
    os.environ["CXR_DATASET_ROOTS"] = tempfile.gettempdir()
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    call_command("collectstatic", verbosity=0, interactive=False)
    from django.contrib.auth.models import User
    from django.core.files.base import ContentFile
    from django.test import Client
    from cxrweb.celery import app
    from training.models import Dataset, Evaluation, ModelVersion, TrainingRun

    # The broker is not what this checks.
    app.send_task = lambda *args, **kwargs: None
    user = User.objects.create_superuser("a", password="pw-long-enough-1")
    client = Client()
    client.force_login(user)
    folder = tempfile.mkdtemp()
    os.mkdir(os.path.join(folder, "normal"))
    resp = client.post("/training/datasets/", {"name": "new", "root": folder, "seed": "0",
                                               "val_fraction": "0.15", "test_fraction": "0.15"})
    assert resp.status_code == 302, resp.status_code
    classes = ["normal", "pneumonia"]
    dataset = Dataset.objects.create(
        name="d", root=folder, status="ready", classes=classes,
        class_counts={"normal": 2, "pneumonia": 2},
        scan={"samples": [["normal/a.png", 0], ["normal/b.png", 0], ["pneumonia/c.png", 1],
                          ["pneumonia/d.png", 1]]},
        split={"train": [0, 2], "val": [1], "test": [3]})
    png = b"\\x89PNG\\r\\n\\x1a\\n" + b"0" * 64
    run = TrainingRun(dataset=dataset, architecture="resnet18", strategy="head",
                      weights="imagenet", status="done", history=[{"epoch": 1}],
                      result={"test_metrics": {"accuracy": 0.5}})
    run.plot_history.save("h.png", ContentFile(png), save=False)
    run.save()
    running = TrainingRun.objects.create(dataset=dataset, architecture="resnet18",
                                         strategy="head", weights="imagenet", status="running",
                                         progress={"epoch": 1, "epochs": 2, "step": 1, "steps": 2})
    versions = []
    for name in ("v1", "v2"):
        v = ModelVersion(name=name, architecture="resnet18", class_labels=classes, sha256="0" * 64)
        v.weights.save(name + ".pt", ContentFile(b"weights"), save=False)
        v.save()
        versions.append(v)
    v1, v2 = versions
    evaluation = Evaluation.objects.create(model_version=v1, dataset=dataset, status="done",
                                           metrics={"accuracy": 0.5})
    evaluation.plot_roc.save("r.png", ContentFile(png))
    posts = [(f"/training/models/{v1.pk}/promote/", {"reason": "first"}),
             (f"/training/models/{v2.pk}/evaluate/", {"dataset": dataset.pk, "split": "test"}),
             ("/training/compare/", {"candidate": v2.pk, "dataset": dataset.pk}),
             (f"/training/runs/{running.pk}/cancel/", {})]
    for url, data in posts:
        assert client.post(url, data).status_code == 302, url
    gets = ["/training/", "/training/datasets/", f"/training/datasets/{dataset.pk}/",
            f"/training/datasets/{dataset.pk}/status/", "/training/runs/", "/training/runs/new/",
            f"/training/runs/{run.pk}/", f"/training/runs/{running.pk}/status/",
            f"/training/runs/{run.pk}/plots/history.png", "/training/models/",
            f"/training/models/{v1.pk}/", f"/training/models/{v2.pk}/evaluations/",
            f"/training/models/{v1.pk}/checkpoint.pt",
            f"/training/evaluations/{evaluation.pk}/plots/roc.png",
            f"/training/compare/?candidate={v2.pk}&dataset={dataset.pk}",
            f"/training/compare/results/?candidate={v2.pk}&dataset={dataset.pk}"]
    for url in gets:
        assert client.get(url).status_code == 200, url
    # Starting a run validates the whole TrainConfig (training.ml.train.config, torch-free).
    resp = client.post("/training/runs/new/", {
        "dataset": dataset.pk, "architecture": "resnet18", "weights": "imagenet",
        "strategy": "head", "epochs": "1", "batch_size": "2", "warmup_head_epochs": "0",
        "unfreeze_blocks": "2", "imbalance": "none", "early_stopping_patience": "0",
        "seed": "0"})
    assert resp.status_code == 302, resp.status_code
    assert TrainingRun.objects.filter(status="queued").count() == 1
    # training.urls imports every view module.
    import training.urls, training.forms, training.selectors  # noqa: F401
    bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "cv2"))
    print("HEAVY:", bad[:5])
    sys.exit(1 if bad else 0)
    """
)


def test_the_training_pages_never_import_torch():
    """Every page and every form (register, start a run, evaluate, compare, promote, cancel),
    through the Django test client in a fresh process: torch stays out of the web process."""
    env = {**os.environ, "SECRET_KEY": "x", "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "HEAVY: []" in proc.stdout
