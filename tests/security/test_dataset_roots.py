"""Datasets are registered only from folders under CXR_DATASET_ROOTS, through the service, the
register_dataset command and the web form alike. Anywhere else is refused with one message that
neither echoes the path nor tells whether it exists; symlinks and ".." are resolved first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from cxrweb.settings import env_paths
from tests.training.ml.imagefolders import make_folder
from training.models import Dataset
from training.services import DatasetRejected, dataset_register
from training.services.datasets import OUTSIDE_ROOTS


@pytest.fixture
def places(tmp_path, settings) -> dict[str, Path]:
    """A dataset root with a real dataset, and a real dataset outside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    make_folder(root / "inside", per_class=2)
    make_folder(outside / "secret", per_class=2)
    (root / "link-out").symlink_to(outside / "secret")
    (root / "link-nowhere").symlink_to(tmp_path / "does-not-exist")
    (root / "link-in").symlink_to(root / "inside")
    settings.CXR_DATASET_ROOTS = [root]
    return {"root": root, "outside": outside}


OUTSIDE = [
    "{outside}/secret",  # exists, a valid dataset
    "{outside}/nothing-here",  # does not exist
    "/etc",
    "/",
    "{root}/../outside/secret",  # ".." out of the root
    "{root}/inside/../../outside/secret",
    "{root}/link-out",  # a symlink in the root to a folder outside it
    "{root}/link-nowhere",
    "{root}x",  # a sibling whose name starts like the root
    "inside",  # relative: resolved against the process's folder, not the root
    "{root}/inside\x00",
    "",
]


def _path(template: str, places: dict[str, Path]) -> str:
    return template.format(**places)


@pytest.mark.parametrize("template", OUTSIDE)
def test_the_service_refuses_a_folder_outside_the_roots_with_one_message(db, places, template):
    path = _path(template, places)
    with pytest.raises(DatasetRejected) as refused:
        dataset_register(name="x", root=path)
    assert str(refused.value) == OUTSIDE_ROOTS
    assert not Dataset.objects.exists()


def test_the_message_neither_names_the_path_nor_the_roots(places):
    assert str(places["root"]) not in OUTSIDE_ROOTS and "/" not in OUTSIDE_ROOTS


@pytest.mark.parametrize("template", ["{root}/inside", "{root}/link-in", "{root}/inside/../inside"])
def test_a_folder_under_a_root_is_registered_at_its_resolved_path(db, places, template):
    dataset = dataset_register(name="ok", root=_path(template, places))
    assert dataset.status == Dataset.Status.READY
    assert dataset.root == str((places["root"] / "inside").resolve())


def test_a_missing_folder_under_a_root_is_named(db, places):
    with pytest.raises(DatasetRejected, match="No such folder"):
        dataset_register(name="x", root=str(places["root"] / "nope"))


def test_a_root_given_through_a_symlink_is_resolved_too(db, places, settings, tmp_path):
    (tmp_path / "root-link").symlink_to(places["root"])
    settings.CXR_DATASET_ROOTS = [tmp_path / "root-link"]
    assert dataset_register(name="ok", root=str(places["root"] / "inside")).size == 4


@pytest.mark.parametrize("template", ["{outside}/secret", "{outside}/nothing-here",
                                      "{root}/link-out"])
def test_the_register_command_refuses_a_folder_outside_the_roots(db, places, template):
    with pytest.raises(CommandError) as refused:
        call_command("register_dataset", "x", _path(template, places))
    assert str(refused.value) == OUTSIDE_ROOTS
    assert not Dataset.objects.exists()


def test_the_web_form_answers_the_same_for_an_existing_and_a_missing_outside_folder(
        admin_client, places):
    def error_of(path: str) -> str:
        resp = admin_client.post("/training/datasets/", {
            "name": "x", "root": path, "seed": "0", "val_fraction": "0.15",
            "test_fraction": "0.15"})
        assert resp.status_code == 400
        html = resp.content.decode()
        start = html.index('<div class="form-errors"')
        return html[start:html.index("</div>", start)]

    answers = {error_of(_path(t, places)) for t in
               ["{outside}/secret", "{outside}/nothing-here", "{root}/link-out", "/etc"]}
    assert len(answers) == 1
    assert OUTSIDE_ROOTS.replace("'", "&#x27;") in answers.pop()
    assert not Dataset.objects.exists()


def test_the_roots_setting_is_a_list_of_absolute_paths(monkeypatch):
    monkeypatch.setenv("CXR_TEST_ROOTS", "/srv/datasets, /mnt/cxr ,")
    assert env_paths("CXR_TEST_ROOTS", []) == [Path("/srv/datasets"), Path("/mnt/cxr")]
    monkeypatch.delenv("CXR_TEST_ROOTS")
    assert env_paths("CXR_TEST_ROOTS", [Path("/var/x")]) == [Path("/var/x")]
    for bad in ("datasets", "/srv/ok,relative", ","):
        monkeypatch.setenv("CXR_TEST_ROOTS", bad)
        with pytest.raises(ImproperlyConfigured, match="absolute paths"):
            env_paths("CXR_TEST_ROOTS", [])


def test_the_default_root_is_var_datasets():
    from django.conf import settings

    if "CXR_DATASET_ROOTS" in os.environ:
        pytest.skip("CXR_DATASET_ROOTS is set in this environment")
    assert settings.CXR_DATASET_ROOTS == [settings.VAR_DIR / "datasets"]
