"""The dataset page's patients per split in a real browser, with screenshots: a dataset grouped
by patient, one whose names look grouped but was not, and the register form's pattern error."""

from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in
from tests.training.ml.imagefolders import make_patient_folder
from training.services import dataset_register

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_admin_sees_patients_per_split_and_the_ungrouped_warning(
    page, live_server, admin_user, artifacts_dir, settings, tmp_path
):
    settings.CXR_DATASET_ROOTS = [tmp_path]
    shots = artifacts_dir / "training"
    shots.mkdir(exist_ok=True)
    grouped = dataset_register(
        name="pediatric-grouped",
        root=str(make_patient_folder(tmp_path / "grouped")),
        group_patterns=[r"person(?P<patient>\d+)_"],
    )
    ungrouped = dataset_register(
        name="pediatric-ungrouped", root=str(make_patient_folder(tmp_path / "ungrouped"))
    )

    sign_in(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/training/datasets/{grouped.pk}/")
    table = page.get_by_test_id("patient-table")
    assert table.is_visible()
    assert table.get_by_role("row").count() == 4  # the header and three splits
    assert page.get_by_text("No patient is in two splits: grouped by pattern").is_visible()
    assert not page.get_by_test_id("patient-warning").is_visible()
    page.screenshot(path=shots / "dataset-patients-grouped.png", full_page=True)

    page.goto(f"{live_server.url}/training/datasets/{ungrouped.pk}/")
    assert page.get_by_test_id("patient-warning").is_visible()
    page.screenshot(path=shots / "dataset-patients-warning.png", full_page=True)

    page.goto(f"{live_server.url}/training/datasets/")
    page.get_by_label("Name").fill("bad-pattern")
    page.get_by_label("Folder").fill(str(tmp_path / "grouped"))
    page.get_by_label("Patient group patterns").fill(r"person(\d+)_")
    page.get_by_role("button", name="Register and scan").click()
    error = page.get_by_text("has no group named 'patient'")
    error.wait_for()
    assert error.is_visible()
