"""Training throughput: images/s per strategy (head, partial, full), with the app's training loop
(training.ml.train.loop) and with a plain torchvision loop on the same images. The plain loop runs one
epoch (it decodes every image in every epoch); the app runs ``--epochs``, and its figure is the
epochs after the first (images decoded once per run), with the first epoch reported beside it.

Runs in its own process (`python -m bench.ml training ...`). The driver calls it only when
training/ml/train/loop.py exists; `app_epoch` is the one place to adapt to that module's API.
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
    epochs: int = 2,
) -> dict[str, float]:
    """``epochs`` epochs with the app's training code (training.ml.train.loop.train_one_epoch on the
    app's input pipeline: the decoded-image cache, batched augmentation on the device, bf16 and
    channels_last on CUDA, the app's strategy freezing). Returns images/s of the first epoch, the
    cache's building included (``first``), and of the later ones together (``steady``).

    The one place to adapt when training.ml.train.loop's API changes.
    """
    import torch

    from training.ml.models.architectures import build_model, default_preprocessing
    from training.ml.train.config import DEFAULT_LR, TrainConfig
    from training.ml.train.pipeline import place_model, run_batches
    from training.ml.train.strategy import apply_strategy

    train = train_module
    torch.manual_seed(0)
    model = build_model(arch, len(classes), weights=backbone)
    apply_strategy(model, arch, strategy, unfreeze_blocks=2)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=DEFAULT_LR[strategy])
    rel = [(str(path.relative_to(root)), label) for path, label in samples]
    device = train.resolve_device(None)  # type: ignore[attr-defined]
    place_model(model, device)
    config = TrainConfig(arch=arch, strategy=strategy, batch_size=batch_size, imbalance="none")
    split = {"train": list(range(len(rel))), "val": [], "test": []}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    started = time.perf_counter()
    batches = run_batches(config, root, rel, split, default_preprocessing(arch), device)
    seconds: list[float] = []
    images: list[int] = []
    for _ in range(max(1, epochs)):
        out = train.train_one_epoch(  # type: ignore[attr-defined]
            model, batches.train, optimizer, torch.nn.CrossEntropyLoss(), device, amp=True
        )
        sync()
        now = time.perf_counter()
        seconds.append(now - started)
        images.append(int(out["images"]))
        started = now
    later = sum(seconds[1:])
    return {
        "first": images[0] / seconds[0],
        "steady": sum(images[1:]) / later if later > 0 else images[0] / seconds[0],
    }


def measure_training(args: argparse.Namespace) -> None:
    root = Path(args.images)
    samples, classes = image_folder(root, args.limit)
    result: dict[str, object] = {
        "images_per_epoch": len(samples),
        "batch_size": args.batch_size,
        "arch": args.arch,
        "app_epochs": args.epochs,
    }
    try:
        train_module = importlib.import_module("training.ml.train.loop")
    except ImportError as exc:
        result["skipped"] = f"training.ml.train.loop not available ({exc})"
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
    app_first: dict[str, object] = {}
    plain: dict[str, object] = {}
    for strategy in STRATEGIES:
        try:
            rates = app_epoch(
                train_module,
                root,
                samples,
                classes,
                args.arch,
                strategy,
                args.backbone_weights,
                args.batch_size,
                args.epochs,
            )
            app[strategy] = round(rates["steady"], 2)
            app_first[strategy] = round(rates["first"], 2)
        except Exception as exc:  # noqa: BLE001 - report it, still measure the plain loop
            app[strategy] = app_first[strategy] = {"error": f"{type(exc).__name__}: {exc}"}
        plain[strategy] = round(
            plain_epoch(
                samples, classes, args.arch, strategy, args.backbone_weights, args.batch_size
            ),
            2,
        )
    # The app after its first epoch (images decoded once, then only copied), and its first
    # epoch with the decoding; the plain loop decodes every image in every epoch.
    result["app_images_per_s"] = app
    result["app_first_epoch_images_per_s"] = app_first
    result["plain_torchvision_images_per_s"] = plain
    result["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result["torch"] = torch.__version__
    if args.fit:
        result["fit"] = measure_fit(root, samples, classes, args)
    Path(args.out).write_text(json.dumps(result, indent=2))


def measure_fit(
    root: Path, samples: list[tuple[Path, int]], classes: list[str], args: argparse.Namespace
) -> dict[str, object]:
    """The whole recipe (training.ml.train.fit.fit) on the same images: a full fine-tune for
    --epochs epochs on a 70/15/15 split, no early stopping; seconds per epoch (train and val),
    the test pass and the whole call. Needs scipy and scikit-learn (calibration, metrics)."""
    import tempfile

    from training.ml.train.config import TrainConfig
    from training.ml.train.fit import fit
    from training.ml.train.splits import stratified_split

    rel = [(str(path.relative_to(root)), label) for path, label in samples]
    split = stratified_split([label for _, label in rel], seed=0)
    config = TrainConfig(
        arch=args.arch,
        weights=args.backbone_weights,
        strategy="full",
        epochs=args.epochs,
        batch_size=args.batch_size,
        early_stopping_patience=None,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result = fit(
            config, root, rel, split, classes=classes, checkpoint_path=Path(folder) / "model.pt"
        )
    return {
        "split_sizes": {name: len(indices) for name, indices in split.items()},
        "epoch_seconds": [round(row["seconds"], 2) for row in result.history],
        "train_images_per_s": [round(row["images_per_s"], 1) for row in result.history],
        "test_images_per_s": round((result.test_metrics or {}).get("images_per_s") or 0.0, 1),
        "test_accuracy": (result.test_metrics or {}).get("accuracy"),
        "seconds": round(time.perf_counter() - started, 2),
    }
