"""Training throughput: images/s for one epoch per strategy (head, partial, full), with the app's
training loop (training.ml.train) and with a plain torchvision loop on the same images.

Runs in its own process (`python -m bench.ml training ...`). The driver calls it only when
training/ml/train.py exists; `app_epoch` is the one place to adapt to that module's API.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import time
from pathlib import Path

STRATEGIES = ("head", "partial", "full")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".dcm"}


def image_folder(root: Path, limit: int, seed: int = 0) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, class index) pairs of an ImageFolder tree, shuffled, at most `limit`."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    samples = [
        (path, index)
        for index, name in enumerate(classes)
        for path in sorted((root / name).rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    random.Random(seed).shuffle(samples)
    return samples[:limit], classes


def plain_epoch(
    samples: list[tuple[Path, int]], classes: list[str], arch: str, strategy: str,
    backbone: str | None, batch_size: int,
) -> float:
    """One epoch of a textbook torchvision fine-tuning loop; returns images/s (decode included)."""
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms as T

    model = torchvision.models.get_model(arch, weights=None, num_classes=len(classes))
    if backbone:
        model.load_state_dict(torch.load(backbone, weights_only=True), strict=False)
    head = model.classifier if hasattr(model, "classifier") else model.fc
    trainable: list[torch.nn.Module] = {
        "head": [head],
        "partial": [head, *list(model.features)[-4:]] if hasattr(model, "features") else [head],
        "full": [model],
    }[strategy]
    model.requires_grad_(False)
    for module in trainable:
        module.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    transform = T.Compose([
        T.Grayscale(3), T.Resize((224, 224)), T.RandomHorizontalFlip(), T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    model.train()
    started = time.perf_counter()
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        x = torch.stack([transform(Image.open(p).convert("L")) for p, _ in chunk])
        y = torch.tensor([label for _, label in chunk])
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    return len(samples) / (time.perf_counter() - started)


def app_epoch(
    train_module: object, root: Path, samples: list[tuple[Path, int]], classes: list[str],
    arch: str, strategy: str, backbone: str | None, batch_size: int,
) -> float:
    """One epoch with the app's training loop; returns images/s.

    Adapt this function to training.ml.train's API once it is settled: it must run exactly one
    epoch over `samples` with `strategy` and return (or let us time) the epoch.
    """
    raise NotImplementedError(
        "bench/training.py:app_epoch does not know training.ml.train's API yet "
        f"(found: {sorted(n for n in dir(train_module) if not n.startswith('_'))})"
    )


def measure_training(args: argparse.Namespace) -> None:
    root = Path(args.images)
    samples, classes = image_folder(root, args.limit)
    result: dict[str, object] = {"images_per_epoch": len(samples), "batch_size": args.batch_size,
                                 "arch": args.arch}
    try:
        train_module = importlib.import_module("training.ml.train")
    except ImportError as exc:
        result["skipped"] = f"training.ml.train not available ({exc})"
        Path(args.out).write_text(json.dumps(result, indent=2))
        return
    import torch

    result["torch_threads"] = torch.get_num_threads()
    app: dict[str, object] = {}
    plain: dict[str, object] = {}
    for strategy in STRATEGIES:
        try:
            app[strategy] = round(app_epoch(train_module, root, samples, classes, args.arch,
                                            strategy, args.backbone_weights, args.batch_size), 2)
        except Exception as exc:  # noqa: BLE001 - report it, still measure the plain loop
            app[strategy] = {"error": f"{type(exc).__name__}: {exc}"}
        plain[strategy] = round(plain_epoch(samples, classes, args.arch, strategy,
                                            args.backbone_weights, args.batch_size), 2)
    result["app_images_per_s"] = app
    result["plain_torchvision_images_per_s"] = plain
    Path(args.out).write_text(json.dumps(result, indent=2))
