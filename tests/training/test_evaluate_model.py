"""``manage.py evaluate_model --json --predictions-out``: the metrics as one JSON object and one
CSV row per image, both from the same evaluation pass, on a tiny model (weights=None)."""

from __future__ import annotations

import csv
import json
import tempfile
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from tests.training.ml.imagefolders import encode, make_folder, square_image
from training.models import Evaluation
from training.services import dataset_register, model_version_import


@pytest.fixture(autouse=True)
def _dataset_roots(settings, tmp_path):
    settings.CXR_DATASET_ROOTS = [tmp_path]


# A class folder whose name a spreadsheet would read as a formula: its paths start with it.
CLASSES = ["=left", "right"]


@pytest.fixture
def dataset(db, tmp_path):
    root = make_folder(tmp_path / "data", per_class=4)
    (root / "left").rename(root / "=left")
    (root / "right" / "=1+2.png").write_bytes(encode(square_image(1, seed=99), "PNG"))
    return dataset_register(name="tiny", root=str(root))


@pytest.fixture
def version(db, state_dict_file):
    return model_version_import(
        path=state_dict_file("mobilenet_v2", len(CLASSES)),
        architecture="mobilenet_v2",
        classes=CLASSES,
        name="tiny-v1",
    )


def _evaluate(*args: str) -> str:
    out = StringIO()
    call_command("evaluate_model", "tiny-v1", "--dataset", "tiny", *args, stdout=out)
    return out.getvalue()


def test_json_prints_the_metrics_as_one_object_and_nothing_else(version, dataset):
    data = json.loads(_evaluate("--split", "all", "--json"))

    assert data["n"] == dataset.size == 9
    assert (data["version"], data["dataset"], data["split"]) == ("tiny-v1", "tiny", "all")
    for key in ("accuracy", "balanced_accuracy", "macro_auc", "ece"):
        assert isinstance(data[key], float), key
    assert set(data["per_class"]) == set(CLASSES)
    for figures in data["per_class"].values():
        assert {"sensitivity", "specificity", "auc"} <= set(figures)
    assert data["ood"] is None  # the version has no out-of-distribution reference
    assert Evaluation.objects.get(pk=data["evaluation"]).status == Evaluation.Status.DONE


@pytest.fixture
def version_with_reference(version):
    from django.core.files.base import ContentFile

    from training.ml.ood import fit_reference

    rng = np.random.default_rng(0)
    # Fitted on features unlike this model's: some or all of the images score over it.
    reference = fit_reference(rng.normal(size=(50, 1280)), rng.normal(size=(20, 1280)))
    with tempfile.TemporaryDirectory() as tmp:
        reference.save(Path(tmp) / "r.npz")
        data = (Path(tmp) / "r.npz").read_bytes()
    version.ood_reference.save("tiny.ood.npz", ContentFile(data), save=False)
    version.ood_summary = reference.to_summary()
    version.save()
    return version


def test_with_an_ood_reference_the_json_and_the_rows_carry_the_scores(
    version_with_reference, dataset, tmp_path
):
    path = tmp_path / "predictions.csv"

    data = json.loads(_evaluate("--split", "all", "--json", "--predictions-out", str(path)))

    with path.open(newline="") as f:
        _, *rows = list(csv.reader(f))
    threshold = version_with_reference.ood_summary["threshold"]
    assert data["ood"]["threshold"] == pytest.approx(threshold)
    assert data["ood"]["n"] == len(rows) == 9
    for row in rows:
        assert row[4] == ("true" if float(row[3]) > threshold else "false")
    flagged = sum(row[4] == "true" for row in rows)
    assert data["ood"]["flagged"] == flagged
    assert data["ood"]["flagged_share"] == pytest.approx(flagged / 9)


def test_predictions_out_writes_one_row_per_image_from_the_same_pass(version, dataset, tmp_path):
    path = tmp_path / "predictions.csv"

    data = json.loads(_evaluate("--split", "all", "--json", "--predictions-out", str(path)))

    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    shown = ["'=left", "right"]  # each cell starting like a formula gets a leading '
    assert header == [
        "path",
        "true_label",
        "predicted_label",
        "ood_score",
        "ood_flagged",
        *shown,
    ]
    assert len(rows) == data["n"] == 9
    paths = sorted(row[0] for row in rows)
    assert paths == sorted(
        f"'{rel}" if rel.startswith("=") else rel for rel, _ in dataset.scan["samples"]
    )
    assert "'=left/img_000.png" in paths and "right/=1+2.png" in paths
    for row in rows:
        probs = [float(p) for p in row[5:]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-6)
        assert row[1] == row[0].split("/")[0]
        assert row[2] == shown[probs.index(max(probs))]
        assert row[3:5] == ["", ""]
    # The metrics were counted from these very rows.
    correct = sum(row[1] == row[2] for row in rows)
    assert data["accuracy"] == pytest.approx(correct / len(rows))
    assert data["per_class"]["=left"]["support"] == sum(row[1] == "'=left" for row in rows) == 4
