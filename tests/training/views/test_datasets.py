"""The dataset pages (training/views/datasets.py): register a folder, its scan, its classes and
splits."""

from __future__ import annotations

import pytest

from tests.conftest import CLASSES
from tests.training.views.conftest import make_dataset, sent_ids
from training.dispatch import SCAN_DATASET
from training.models import Dataset

pytestmark = pytest.mark.django_db


def test_the_register_form_creates_a_dataset_and_queues_its_scan(
    admin_client, admin_user, tmp_path, sent_tasks, django_capture_on_commit_callbacks
):
    queued = sent_ids(sent_tasks, SCAN_DATASET)
    (tmp_path / "normal").mkdir()
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(
            "/training/datasets/",
            {
                "name": "kermany",
                "root": str(tmp_path),
                "seed": "3",
                "val_fraction": "0.1",
                "test_fraction": "0.2",
            },
        )
    dataset = Dataset.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/training/datasets/{dataset.pk}/"
    assert queued() == [dataset.pk]
    assert (
        dataset.status,
        dataset.split_seed,
        dataset.val_fraction,
        dataset.test_fraction,
        dataset.created_by,
    ) == ("scanning", 3, 0.1, 0.2, admin_user)
    html = admin_client.get(resp["Location"]).content.decode()
    assert "Scanning" in html
    assert f'data-poll-url="/training/datasets/{dataset.pk}/status/" data-poll-ms=' in html
    assert 'data-pending="1"' in html


@pytest.mark.parametrize(
    "data, message",
    [
        ({"root": "/no/such/folder"}, "only from folders under the dataset roots"),
        ({"root": "{tmp}/nope"}, "No such folder"),
        ({"val_fraction": "0.7"}, "less than or equal to 0.49"),
        ({"name": ""}, "This field is required"),
    ],
)
def test_the_register_form_shows_what_is_wrong_and_registers_nothing(
    admin_client, tmp_path, data, message
):
    form = {
        "name": "x",
        "root": str(tmp_path),
        "seed": "0",
        "val_fraction": "0.15",
        "test_fraction": "0.15",
        **data,
    }
    form["root"] = form["root"].replace("{tmp}", str(tmp_path))
    resp = admin_client.post("/training/datasets/", form)
    assert resp.status_code == 400
    assert message in resp.content.decode()
    assert not Dataset.objects.exists()


def test_a_dataset_page_shows_classes_splits_and_unreadable_files(admin_client, dataset):
    html = admin_client.get(f"/training/datasets/{dataset.pk}/").content.decode()
    # per class: 10 images, 6 train / 2 val / 2 test (every 5th index is test)
    for c in CLASSES:
        assert f'<th scope="row">{c}</th><td class="num">10</td><td class="num">6</td>' in html
    assert (
        '<td class="num">40</td><td class="num">24</td><td class="num">8</td><td class="num">8</td>'
        in html
    )
    assert "normal/broken.png" in html and "The file is truncated." in html
    assert "Unreadable files (2)" in html
    assert "data-poll-ms" not in html  # ready: no polling
    assert f'href="/training/runs/new/?dataset={dataset.pk}"' in html


def test_a_failed_scan_shows_its_error(admin_client, db):
    dataset = make_dataset("broken", status=Dataset.Status.FAILED)
    html = admin_client.get(f"/training/datasets/{dataset.pk}/").content.decode()
    assert "The scan failed" in html and "No class folders" in html
