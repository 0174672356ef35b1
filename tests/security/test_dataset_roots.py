"""Datasets are registered only from folders under CXR_DATASET_ROOTS, through the service, the
register_dataset command and the web form alike. Anywhere else is refused with one message that
neither echoes the path nor tells whether it exists; symlinks and ".." are resolved first."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from cxrweb.env import env_paths
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


@pytest.mark.parametrize(
    "template", ["{outside}/secret", "{outside}/nothing-here", "{root}/link-out"]
)
def test_the_register_command_refuses_a_folder_outside_the_roots(db, places, template):
    with pytest.raises(CommandError) as refused:
        call_command("register_dataset", "x", _path(template, places))
    assert str(refused.value) == OUTSIDE_ROOTS
    assert not Dataset.objects.exists()


def test_the_web_form_answers_the_same_for_an_existing_and_a_missing_outside_folder(
    admin_client, places
):
    def error_of(path: str) -> str:
        resp = admin_client.post(
            "/training/datasets/",
            {
                "name": "x",
                "root": path,
                "seed": "0",
                "val_fraction": "0.15",
                "test_fraction": "0.15",
            },
        )
        assert resp.status_code == 400
        html = resp.content.decode()
        start = html.index('<div class="form-errors"')
        return html[start : html.index("</div>", start)]

    answers = {
        error_of(_path(t, places))
        for t in ["{outside}/secret", "{outside}/nothing-here", "{root}/link-out", "/etc"]
    }
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


# Links inside a registered folder (item 10, F4): the root is checked, and so is every class
# folder, sub-folder and file the scan reaches, and every later read of a file.


@pytest.fixture
def linked(tmp_path, settings) -> dict[str, Path]:
    """A dataset under the root whose class folder, sub-folder and file links lead outside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    ds = make_folder(root / "ds", per_class=2)
    make_folder(outside / "secret", per_class=3)
    (ds / "ETC").symlink_to("/etc")  # a third "class" that is the server's /etc
    (ds / "OUT").symlink_to(outside / "secret" / "left")
    (ds / "left" / "sub").symlink_to(outside / "secret" / "right")
    (ds / "right" / "extra.png").symlink_to(outside / "secret" / "right" / "img_000.png")
    (ds / "left" / "alias.png").symlink_to(ds / "left" / "img_000.png")  # stays inside: kept
    (ds / "left" / "loop").symlink_to(ds / "left")  # inside, but walked only once
    settings.CXR_DATASET_ROOTS = [root]
    return {"root": root, "outside": outside, "ds": ds}


LEFT_OUT = ["ETC", "OUT", "left/sub", "right/extra.png"]


def test_the_service_leaves_out_links_leading_outside_the_folder_without_naming_targets(db, linked):
    dataset = dataset_register(name="ds", root=str(linked["ds"]))
    assert dataset.status == Dataset.Status.READY, dataset.error
    assert dataset.classes == ["left", "right"]
    assert sorted(dataset.scan["outside"]) == LEFT_OUT
    assert sorted(rel for rel, _ in dataset.scan["samples"]) == [
        "left/alias.png",
        "left/img_000.png",
        "left/img_001.jpg",
        "right/img_000.png",
        "right/img_001.jpg",
    ]
    stored = repr(dataset.scan) + repr(dataset.unreadable) + dataset.error
    assert str(linked["outside"]) not in stored and "/etc" not in stored


def test_a_class_folder_linked_outside_is_no_class_and_the_message_hides_its_target(
    db, tmp_path, settings
):
    root, outside = tmp_path / "root", tmp_path / "outside"
    make_folder(outside / "secret", per_class=2)
    ds = root / "ds3"
    make_folder(ds, per_class=2)
    shutil.rmtree(ds / "left")
    (ds / "left").symlink_to(outside / "secret" / "left")
    settings.CXR_DATASET_ROOTS = [root]
    dataset = dataset_register(name="ds3", root=str(ds))
    assert dataset.status == Dataset.Status.FAILED
    assert "'left' left out: links that lead outside the dataset folder" in dataset.error
    assert str(outside) not in dataset.error


def test_the_register_command_lists_the_links_it_did_not_follow(db, linked, capsys):
    call_command("register_dataset", "cmd", str(linked["ds"]))
    out = capsys.readouterr().out
    assert "Registered dataset 'cmd'" in out and ": 5 images" in out
    assert "4 link(s) leading outside the dataset folder, not followed:" in out
    for rel in LEFT_OUT:
        assert f"  {rel}\n" in out
    assert str(linked["outside"]) not in out and "passwd" not in out


def test_a_file_replaced_by_a_link_after_the_scan_is_not_read(db, linked):
    from training.ml.preprocessing import Preprocessing
    from training.ml.train.cache import DecodedImages
    from training.ml.train.dataset import CXRDataset
    from training.ml.train.scan import DatasetError
    from training.ml.train.splits import duplicates_by_hash

    dataset = dataset_register(name="ds", root=str(linked["ds"]))
    samples = [tuple(s) for s in dataset.scan["samples"]]
    index = samples.index(("right/img_000.png", 1))
    target = linked["ds"] / "right" / "img_000.png"
    target.unlink()
    target.symlink_to(linked["outside"] / "secret" / "left" / "img_000.png")
    with pytest.raises(DatasetError, match="leads outside that folder"):
        CXRDataset(dataset.root, samples, [index]).image(0)
    with pytest.raises(DatasetError, match="leads outside that folder"):
        DecodedImages(dataset.root, samples, [index], Preprocessing(input_size=32)).batch([index])
    with pytest.raises(DatasetError, match="leads outside that folder"):
        duplicates_by_hash(dataset.root, samples)
    # a sample list naming a path out of the folder is refused alike
    with pytest.raises(DatasetError):
        CXRDataset(dataset.root, [("../../outside/secret/left/img_000.png", 0)]).image(0)


def test_a_dataset_folder_replaced_by_a_link_out_of_the_roots_is_not_scanned_or_trained(db, linked):
    from training.models import TrainingRun
    from training.services import dataset_scan, training_run_create, training_run_execute

    dataset = dataset_register(name="ds", root=str(linked["ds"]))
    run = training_run_create(
        dataset=dataset,
        config={"arch": "mobilenet_v2", "weights": None, "epochs": 1},
        enqueue=False,
    )
    moved = linked["root"].parent / "moved-ds"
    linked["ds"].rename(moved)
    linked["ds"].symlink_to(linked["outside"] / "secret")
    run = training_run_execute(run_id=run.pk)
    assert run.status == TrainingRun.Status.FAILED
    assert run.error == OUTSIDE_ROOTS
    dataset = dataset_scan(dataset_id=dataset.pk)
    assert (dataset.status, dataset.error) == (Dataset.Status.FAILED, OUTSIDE_ROOTS)
