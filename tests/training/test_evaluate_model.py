"""``manage.py evaluate_model --json --predictions-out``: the metrics as one JSON object and one
CSV row per image, both from the same evaluation pass, on a tiny model (weights=None)."""

from __future__ import annotations

import csv
import json
from io import StringIO

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
    assert data["ood"] is None  # no out-of-distribution score yet
    assert Evaluation.objects.get(pk=data["evaluation"]).status == Evaluation.Status.DONE


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
