"""How well the out-of-distribution score separates the training distribution from other images.

Trains a quick model on a paediatric chest X-ray folder (patient-grouped split) or loads a given
checkpoint, fits the OOD reference the way ``fit()`` does (training split's pooled features,
threshold = the validation split's 99th percentile), and prints the AUROC of the score for the
in-distribution test split against: adult X-ray folders, photographs and drawings, and the test
images rotated 90 / 180 degrees and inverted. Every image is read the way the worker reads it
(Pillow, then ``to_model_input``) and goes through the model once; features are cached in memory.

Without ``--checkpoint`` the model is mobilenet_v2 from the local backbone file with the "head"
strategy: the backbone is frozen, so its features are computed once and the head is trained on
them (AdamW, no augmentation). The OOD score does not depend on the head then.

    .venv/bin/python bench/ood.py --train ../shared/data/kermany-pediatric \\
        --weights ../shared/weights/mobilenet_v2-imagenet-features.pth \\
        --adult ../shared/data/covid-radiography --adult ../shared/data/covid-3way
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.ml.models.architectures import build_model, default_preprocessing  # noqa: E402
from training.ml.models.checkpoint import build_for_inference, load_weights_file  # noqa: E402
from training.ml.ood import fit_reference, image_checks, pooled_features  # noqa: E402
from training.ml.preprocessing import Preprocessing, batch_model_input  # noqa: E402
from training.ml.train.metrics import classification_report  # noqa: E402
from training.ml.train.patient_groups import patient_ids_by_patterns, union_group_ids  # noqa: E402
from training.ml.train.splits import stratified_split  # noqa: E402

PATTERNS = [r"person(?P<patient>\d+)_", r"(?P<patient>IM-\d+)-"]
EXTENSIONS = {".jpg", ".jpeg", ".png"}


def folder_samples(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples = [
        (str(f.relative_to(root)), label)
        for label, name in enumerate(classes)
        for f in sorted((root / name).iterdir())
        if f.suffix.lower() in EXTENSIONS
    ]
    return classes, samples


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(an outside image scores higher than an inside one), ties counted half."""
    ordered = np.sort(inside)
    below = np.searchsorted(ordered, outside, side="left")
    at_or_below = np.searchsorted(ordered, outside, side="right")
    return float(((below + at_or_below) / 2).mean() / len(ordered))


class Extractor:
    """The model's logits and pooled features, and the image checks, of lists of pictures."""

    def __init__(self, model: torch.nn.Module, arch: str, prep: Preprocessing, batch: int) -> None:
        self.model, self.arch, self.prep, self.batch = model.eval(), arch, prep, batch
        self.images = 0
        self.seconds = 0.0

    def __call__(self, pictures: list[Image.Image]) -> tuple[np.ndarray, np.ndarray, list]:
        feats, logits, checks = [], [], []
        started = time.perf_counter()
        for start in range(0, len(pictures), self.batch):
            chunk = pictures[start : start + self.batch]
            x = batch_model_input(chunk, self.prep)
            f = pooled_features(self.model, self.arch, x)
            with torch.no_grad():
                logits.append(self.head(f).numpy())
            feats.append(f.numpy())
            checks.extend(image_checks(p) for p in chunk)
        self.images += len(pictures)
        self.seconds += time.perf_counter() - started
        return np.concatenate(feats), np.concatenate(logits), checks

    def head(self, features: torch.Tensor) -> torch.Tensor:
        from training.ml.models.architectures import head_layer

        return head_layer(self.model, self.arch)(features)


def load_pictures(root: Path, rels: list[str]) -> list[Image.Image]:
    out = []
    for rel in rels:
        with Image.open(root / rel) as img:
            img.load()
            out.append(img.copy())
    return out


def drawn_pictures(n: int, seed: int = 0) -> list[Image.Image]:
    """Things a user might upload by mistake: documents, diagrams, gradients, noise, shapes."""
    rng = np.random.default_rng(seed)
    out: list[Image.Image] = []
    for i in range(n):
        kind = i % 5
        size = (int(rng.integers(300, 800)), int(rng.integers(300, 800)))
        if kind == 0:  # a text page
            img = Image.new("L", size, 245)
            draw = ImageDraw.Draw(img)
            for row in range(0, size[1] - 20, 18):
                draw.text((10, row), "Lorem ipsum dolor sit amet " * 4, fill=20)
        elif kind == 1:  # a diagram
            img = Image.new("RGB", size, (255, 255, 255))
            draw = ImageDraw.Draw(img)
            for _ in range(12):
                box = sorted(rng.integers(0, min(size), 4).tolist())
                draw.rectangle((box[0], box[1], box[2], box[3]), outline=(0, 0, 0), width=3)
        elif kind == 2:  # a smooth gradient photo-like field
            yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
            field = np.sin(xx / rng.uniform(20, 80)) * np.cos(yy / rng.uniform(20, 80))
            img = Image.fromarray(((field + 1) * 127).astype(np.uint8))
        elif kind == 3:  # noise
            img = Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8))
        else:  # filled shapes in grey
            img = Image.new("L", size, int(rng.integers(0, 255)))
            draw = ImageDraw.Draw(img)
            for _ in range(20):
                box = sorted(rng.integers(0, min(size), 4).tolist())
                draw.ellipse((box[0], box[1], box[2], box[3]), fill=int(rng.integers(0, 255)))
        out.append(img)
    return out


def sample_photos() -> list[Image.Image]:
    """The sample photographs scikit-image and scikit-learn ship, when importable."""
    photos: list[Image.Image] = []
    try:
        from sklearn.datasets import load_sample_images

        photos += [Image.fromarray(a) for a in load_sample_images().images]
    except Exception:  # noqa: BLE001 - optional
        pass
    try:
        from skimage import data as skdata

        for name in (
            "astronaut",
            "camera",
            "coffee",
            "coins",
            "moon",
            "page",
            "chelsea",
            "rocket",
            "text",
            "clock",
            "grass",
            "gravel",
            "brick",
            "horse",
        ):
            try:
                arr = getattr(skdata, name)()
                if arr.dtype == bool:
                    arr = arr.astype(np.uint8) * 255
                photos.append(Image.fromarray(arr))
            except Exception:  # noqa: BLE001 - some need pooch downloads
                pass
    except ImportError:
        pass
    return photos


def train_head(
    model: torch.nn.Module, arch: str, feats: np.ndarray, labels: np.ndarray, epochs: int
) -> None:
    from training.ml.models.architectures import head_layer

    head = head_layer(model, arch)
    x = torch.from_numpy(feats)
    y = torch.from_numpy(labels).long()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)
    weight = torch.tensor(len(y) / (2 * np.bincount(labels)), dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(32):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(x[idx]), y[idx], weight=weight)
            loss.backward()
            opt.step()


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--train", type=Path, required=True, help="the training dataset folder")
    ap.add_argument("--weights", help="local backbone weights file (mobilenet_v2)")
    ap.add_argument("--checkpoint", help="a trained checkpoint instead of a quick head model")
    ap.add_argument("--adult", type=Path, action="append", default=[], help="other X-ray folders")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=30, help="head epochs on cached features")
    ap.add_argument("--percentile", type=float, default=99.0)
    ap.add_argument("--drawn", type=int, default=40, help="drawn pictures (documents, ...)")
    ap.add_argument("--max-train", type=int, default=0, help="at most this many train images")
    ap.add_argument("--max-other", type=int, default=0, help="at most this many per other set")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json-out", type=Path)
    return ap.parse_args()


def _subsample(items: list, n: int, seed: int = 0) -> list:
    if not n or len(items) <= n:
        return items
    keep = sorted(np.random.default_rng(seed).choice(len(items), n, replace=False).tolist())
    return [items[i] for i in keep]


def _model(args: argparse.Namespace, classes: list[str]):
    if args.checkpoint:
        state, meta = load_weights_file(args.checkpoint)
        assert meta is not None, "a checkpoint with meta (arch, classes, preprocessing)"
        return meta.arch, meta.preprocessing, build_for_inference(meta.arch, meta.classes, state)
    arch = "mobilenet_v2"
    base = default_preprocessing(arch)
    prep = Preprocessing(input_size=args.input_size, mean=base.mean, std=base.std)
    return arch, prep, build_model(arch, len(classes), weights=args.weights)


def _other_sets(args: argparse.Namespace, test_pics: list) -> dict[str, list[Image.Image]]:
    others: dict[str, list[Image.Image]] = {}
    for folder in args.adult:
        _, s = folder_samples(folder)
        others[folder.name] = load_pictures(folder, _subsample([r for r, _ in s], args.max_other))
    others["photos (sklearn/skimage samples)"] = sample_photos()
    others["drawn (documents, diagrams, noise)"] = drawn_pictures(args.drawn)
    some = _subsample(test_pics, args.max_other)
    others["test rotated 90"] = [p.rotate(90, expand=True) for p in some]
    others["test rotated 180"] = [p.rotate(180) for p in some]
    others["test inverted"] = [ImageOps.invert(p.convert("L")) for p in some]
    return others


def _row(name, scores, msp, checks, threshold, inside=None, inside_msp=None) -> dict:
    checked = np.array([bool(c) for c in checks])
    over = scores > threshold
    return {
        "set": name,
        "n": len(scores),
        "auroc": None if inside is None else auroc(inside, scores),
        "auroc_msp": None if inside_msp is None else auroc(inside_msp, msp),
        "flagged_by_score": float(over.mean()),
        "flagged_by_checks": float(checked.mean()),
        "flagged": float((over | checked).mean()),
        "median_score": float(np.median(scores)),
    }


def _msp(logits: np.ndarray) -> np.ndarray:
    return 1 - torch.softmax(torch.from_numpy(logits), 1).numpy().max(1)


def _print_rows(rows: list[dict]) -> None:
    print(
        "| images | n | AUROC (Mahalanobis) | AUROC (1 - max softmax) | flagged by score | "
        "flagged by image checks | flagged (either) | median score |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.1f} %"

    def num(x: float | None) -> str:
        return "—" if x is None else f"{x:.3f}"

    for r in rows:
        print(
            f"| {r['set']} | {r['n']} | {num(r['auroc'])} | {num(r['auroc_msp'])} | "
            f"{pct(r['flagged_by_score'])} | {pct(r['flagged_by_checks'])} | "
            f"{pct(r['flagged'])} | {r['median_score']:.1f} |"
        )


def main() -> None:
    args = _args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    classes, samples = folder_samples(args.train)
    rels = [rel for rel, _ in samples]
    labels = np.array([label for _, label in samples])
    groups = union_group_ids(len(samples), patient_ids_by_patterns(rels, PATTERNS))
    split = stratified_split(
        labels.tolist(), val_fraction=0.15, test_fraction=0.15, seed=0, group_ids=groups
    )
    split["train"] = _subsample(split["train"], args.max_train)
    arch, prep, model = _model(args, classes)
    extract = Extractor(model, arch, prep, args.batch)

    feats, logits, checks, pics = {}, {}, {}, {}
    for name in ("train", "val", "test"):
        pics[name] = load_pictures(args.train, [rels[i] for i in split[name]])
        feats[name], logits[name], checks[name] = extract(pics[name])
    if not args.checkpoint:
        train_head(model, arch, feats["train"], labels[split["train"]], args.epochs)
        for name in feats:
            with torch.no_grad():
                logits[name] = extract.head(torch.from_numpy(feats[name])).numpy()
    probs = torch.softmax(torch.from_numpy(logits["test"]), 1).numpy().astype(np.float64)
    report = classification_report(labels[split["test"]], probs, classes)

    started = time.perf_counter()
    reference = fit_reference(feats["train"], feats["val"], percentile=args.percentile)
    fit_s = time.perf_counter() - started
    inside, inside_msp = reference.scores(feats["test"]), _msp(logits["test"])
    rows = [
        _row(
            f"{args.train.name} test (in distribution)",
            inside,
            inside_msp,
            checks["test"],
            reference.threshold,
        )
    ]
    for name, others in _other_sets(args, pics["test"]).items():
        if others:
            f, lg, ck = extract(others)
            rows.append(
                _row(
                    name,
                    reference.scores(f),
                    _msp(lg),
                    ck,
                    reference.threshold,
                    inside,
                    inside_msp,
                )
            )

    source = f"checkpoint {args.checkpoint}" if args.checkpoint else f"head on {args.weights}"
    print(
        f"model: {arch} {source}, input {prep.input_size}; split train/val/test = "
        f"{len(split['train'])}/{len(split['val'])}/{len(split['test'])} (patient-grouped)"
    )
    print(f"test accuracy {report['accuracy']:.3f}, macro AUC {report.get('macro_auc') or 0:.3f}")
    print(
        f"reference: {json.dumps(reference.to_summary())}; fitted in {fit_s:.2f} s; "
        f"{extract.images} images through the model at {extract.images / extract.seconds:.1f}/s"
    )
    print()
    _print_rows(rows)
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"reference": reference.to_summary(), "rows": rows, "test": report})
        )


if __name__ == "__main__":
    main()
