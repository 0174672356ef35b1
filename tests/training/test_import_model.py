from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import CLASSES
from training.models import ModelVersion

# Every architecture the issue names, loaded from a plain torchvision state_dict.
ARCHS = [
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
    "vgg16",
    "efficientnet_b0",
    "mobilenet_v2",
]


@pytest.mark.parametrize("arch", ARCHS)
def test_import_model_registers_each_architecture_and_it_predicts(db, state_dict_file, arch):
    from PIL import Image as PILImage

    from diagnosis.worker import compute
    from tests import imagegen

    call_command(
        "import_model",
        state_dict_file(arch, 3),
        "--arch",
        arch,
        "--classes",
        "normal,pneumonia,covid19",
        "--name",
        f"v-{arch}",
    )
    version = ModelVersion.objects.get(name=f"v-{arch}")
    assert version.architecture == arch
    assert version.class_labels == ["normal", "pneumonia", "covid19"]
    assert version.status == ModelVersion.Status.CANDIDATE
    assert len(version.sha256) == 64
    predictor = compute.predictor_for(version)
    picture = PILImage.open(__import__("io").BytesIO(imagegen.png_bytes()))
    [result] = predictor.predict([picture])
    assert list(result.probabilities) == version.class_labels
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.cam.shape == (version.input_size, version.input_size)
    compute.clear_cache()


def test_import_model_with_promote_puts_it_in_production(db, state_dict_file, capsys):
    call_command(
        "import_model",
        state_dict_file("mobilenet_v2"),
        "--arch",
        "mobilenet_v2",
        "--classes",
        ",".join(CLASSES),
        "--promote",
        "--override-reason",
        "test weights",
    )
    [version] = ModelVersion.objects.all()
    assert version.status == ModelVersion.Status.PRODUCTION
    assert version.promotions.count() == 1
    assert "now in production" in capsys.readouterr().out


def test_a_second_promotion_retires_the_first_and_a_rollback_restores_it(db, state_dict_file):
    from training.services import model_version_promote

    path = state_dict_file("mobilenet_v2")
    call_command(
        "import_model",
        path,
        "--arch",
        "mobilenet_v2",
        "--classes",
        ",".join(CLASSES),
        "--name",
        "one",
        "--promote",
        "--override-reason",
        "test weights",
    )
    call_command(
        "import_model",
        path,
        "--arch",
        "mobilenet_v2",
        "--classes",
        ",".join(CLASSES),
        "--name",
        "two",
        "--promote",
        "--override-reason",
        "test weights",
    )
    assert ModelVersion.objects.get(name="one").status == "retired"
    assert ModelVersion.objects.get(name="two").status == "production"
    model_version_promote(
        override_reason="test weights",
        version=ModelVersion.objects.get(name="one"),
        reason="roll back",
    )
    assert ModelVersion.objects.get(name="one").status == "production"
    assert ModelVersion.objects.filter(status="production").count() == 1


def test_the_database_allows_only_one_production_version(db, state_dict_file):
    from django.db import IntegrityError

    path = state_dict_file("mobilenet_v2")
    for name in ("a", "b"):
        call_command(
            "import_model",
            path,
            "--arch",
            "mobilenet_v2",
            "--classes",
            ",".join(CLASSES),
            "--name",
            name,
        )
    ModelVersion.objects.filter(name="a").update(status="production")
    with pytest.raises(IntegrityError):
        ModelVersion.objects.filter(name="b").update(status="production")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "mobilenet_v2", "--classes", "a,b,c"], "3 classes"),
        (["--arch", "resnet18", "--classes", ",".join(CLASSES)], "resnet18"),
        (["--arch", "alexnet9", "--classes", ",".join(CLASSES)], "Unknown architecture"),
        (["--arch", "mobilenet_v2", "--classes", "only_one"], "at least two"),
    ],
)
def test_import_model_explains_what_is_wrong(db, state_dict_file, args, message):
    with pytest.raises(CommandError) as exc:
        call_command("import_model", state_dict_file("mobilenet_v2"), *args)
    assert message.lower() in str(exc.value).lower()
    assert ModelVersion.objects.count() == 0


def test_import_model_refuses_a_file_that_is_not_a_state_dict(db, tmp_path):
    bogus = tmp_path / "model.pt"
    bogus.write_text("not a model")
    with pytest.raises(CommandError) as exc:
        call_command("import_model", str(bogus), "--arch", "resnet18", "--classes", "a,b")
    assert str(bogus) in str(exc.value) or "state dict" in str(exc.value).lower()
    assert ModelVersion.objects.count() == 0
