"""A de-identified export asked for on the page is written by a real training-queue worker and
becomes a ready dataset (issue #25 item 4)."""

from __future__ import annotations

import pytest

from diagnosis.export_models import DatasetExport
from tests.conftest import wait_for
from tests.diagnosis.test_exports import _cohort
from training.models import Dataset

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_training_worker_writes_and_registers_an_export(
    client, admin_user, radiologist, settings, tmp_path, training_worker
):
    settings.CXR_DATASET_ROOTS = [tmp_path]
    settings.CXR_EXPORT_ROOT = tmp_path / "exports"
    ids = _cohort(radiologist, n_per_class=6)
    client.force_login(admin_user)

    assert client.post("/exports/", {"name": "worker-export", "study": ids}).status_code == 302

    def finished():
        export = DatasetExport.objects.get(name="worker-export")
        return export if export.status in ("done", "failed") else None

    export = wait_for(finished, timeout=120, what="the export to finish")
    assert export.status == "done", export.error
    assert export.images == 12 and export.dataset.status == Dataset.Status.READY
    page = client.get("/exports/")
    assert b"worker-export" in page.content and b"NORMAL 6, PNEUMONIA 6" in page.content
