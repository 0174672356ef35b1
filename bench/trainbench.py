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
    samples: list[tuple[Path, int]],
    classes: list[str],
    arch: str,
    strategy: str,
    backbone: str | None,
    batch_size: int,
) -> float:
    """One epoch of a textbook torchvision fine-tuning loop; returns images/s (decode included).

    Strategies as the app defines them: head = the classifier; partial = the last 2 backbone
    blocks and the classifier; full = everything. (model.train() everywhere: frozen BatchNorms
    update their statistics here, unlike the app's train_mode; the cost is the same.)
    """
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
        "partial": [head, *list(model.features)[-2:]] if hasattr(model, "features") else [head],
        "full": [model],
    }[strategy]
    model.requires_grad_(False)
    for module in trainable:
        module.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    transform = T.Compose(
        [
            T.Grayscale(3),
            T.Resize((224, 224)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    started = time.perf_counter()
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        x = torch.stack([transform(Image.open(p).convert("L")) for p, _ in chunk]).to(device)
        y = torch.tensor([label for _, label in chunk], device=device)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    return len(samples) / (time.perf_counter() - started)


def app_epoch(
    train_module: object,
    root: Path,
    samples: list[tuple[Path, int]],
    classes: list[str],
    arch: str,
    strategy: str,
    backbone: str | None,
    batch_size: int,
) -> float:
    """One epoch with the app's training code (training.ml.train.train_one_epoch, the app's
    dataset, loader, transforms and strategy freezing); returns images/s as it reports them.

    The one place to adapt when training.ml.train's API changes.
    """
    import torch

    from training.ml import data
    from training.ml.architectures import build_model, default_preprocessing
    from training.ml.transforms import train_transform

    train = train_module
    torch.manual_seed(0)
    model = build_model(arch, len(classes), weights=backbone)
    train.apply_strategy(model, arch, strategy, unfreeze_blocks=2)  # type: ignore[attr-defined]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.DEFAULT_LR[strategy])  # type: ignore[attr-defined]
    rel = [(str(path.relative_to(root)), label) for path, label in samples]
    dataset = data.CXRDataset(root, rel, None, train_transform(default_preprocessing(arch)))
    loader = data.make_loader(dataset, batch_size=batch_size, shuffle=True, seed=0)
    device = train.resolve_device(None)  # type: ignore[attr-defined]
    model.to(device)
    out = train.train_one_epoch(  # type: ignore[attr-defined]
        model, loader, optimizer, torch.nn.CrossEntropyLoss(), device
    )
    return float(out["images_per_s"])


def measure_training(args: argparse.Namespace) -> None:
    root = Path(args.images)
    samples, classes = image_folder(root, args.limit)
    result: dict[str, object] = {
        "images_per_epoch": len(samples),
        "batch_size": args.batch_size,
        "arch": args.arch,
    }
    try:
        train_module = importlib.import_module("training.ml.train")
    except ImportError as exc:
        result["skipped"] = f"training.ml.train not available ({exc})"
        Path(args.out).write_text(json.dumps(result, indent=2))
        return
    import torch

    result["torch_threads"] = torch.get_num_threads()
    # Untimed warm-up (oneDNN primitive caches, lazy imports), so the first strategy is not
    # charged for it.
    plain_epoch(
        samples[: args.batch_size],
        classes,
        args.arch,
        "full",
        args.backbone_weights,
        args.batch_size,
    )
    app: dict[str, object] = {}
    plain: dict[str, object] = {}
    for strategy in STRATEGIES:
        try:
            app[strategy] = round(
                app_epoch(
                    train_module,
                    root,
                    samples,
                    classes,
                    args.arch,
                    strategy,
                    args.backbone_weights,
                    args.batch_size,
                ),
                2,
            )
        except Exception as exc:  # noqa: BLE001 - report it, still measure the plain loop
            app[strategy] = {"error": f"{type(exc).__name__}: {exc}"}
        plain[strategy] = round(
            plain_epoch(
                samples, classes, args.arch, strategy, args.backbone_weights, args.batch_size
            ),
            2,
        )
    result["app_images_per_s"] = app
    result["plain_torchvision_images_per_s"] = plain
    Path(args.out).write_text(json.dumps(result, indent=2))
