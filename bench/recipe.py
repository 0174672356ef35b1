"""Does the training recipe transfer? Train one model per recipe on kermany-pediatric (split by
patient) and evaluate each on data it never saw: the grouped test split, adult X-rays from another
hospital (covid-3way: Normal -> NORMAL, Viral_Pneumonia -> PNEUMONIA; Covid left out) and a
normal-only adult set (covid-radiography's Normal: specificity).

``old`` is the recipe of commit 5beb05d (no gamma, per-epoch cosine without warm-up, no label
smoothing, no TTA); ``new`` is today's TrainConfig defaults (what the app trains with). Both
runs use the same split, seed, strategy, epochs and backbone; only the recipe differs.

    .venv/bin/python bench/recipe.py --data ../shared/data/kermany-pediatric \\
        --weights ../shared/weights/mobilenet_v2-imagenet-features.pth \\
        --cross ../shared/data/covid-3way --normals ../shared/data/covid-radiography \\
        --recipe old --out /tmp/recipe-old.json
    .venv/bin/python bench/recipe.py ... --recipe new --out /tmp/recipe-new.json
    .venv/bin/python bench/recipe.py --table /tmp/recipe-old.json /tmp/recipe-new.json

Each run prints and writes JSON; ``--table`` turns several into the markdown table of
bench/RESULTS.md. CPU-sized: strategy ``partial``, 224 px, a few epochs, one thread.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.ml.train.config import TrainConfig  # noqa: E402

#: The recipe as it was before issue #23 item 4 (every option that changed, at its old value).
OLD = {
    "label_smoothing": 0.0,
    "gamma": 0.0,
    "lr_schedule": "cosine_epoch",
    "lr_warmup_epochs": 0,
    "tta": False,
}
#: Today's defaults (TrainConfig as it is).
NEW: dict[str, Any] = {}
RECIPES = {"old": OLD, "new": NEW}
CLASSES = ["NORMAL", "PNEUMONIA"]
PATIENT_PATTERNS = [r"person(?P<patient>\d+)_", r"(?P<patient>IM-\d+)-"]


def _known(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides this TrainConfig knows (so the script also runs on the old code)."""
    names = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in overrides.items() if k in names}


def _mapped(root: str, mapping: dict[str, str]) -> list[tuple[str, int]]:
    from training.ml.train.scan import scan_image_folder

    scan = scan_image_folder(root, verify=False)
    out = []
    for rel, label in scan.samples:
        target = mapping.get(scan.classes[label])
        if target is not None:
            out.append((rel, CLASSES.index(target)))
    return out


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    pneu = metrics["per_class"]["PNEUMONIA"]
    normal = metrics["per_class"]["NORMAL"]
    at = pneu.get("at_threshold") or {}
    return {
        "n": metrics["n"],
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "sensitivity": pneu["sensitivity"],
        "specificity": normal["sensitivity"],
        "auc": pneu["auc"],
        "ece": metrics["ece"],
        "threshold_sensitivity": at.get("sensitivity"),
        "threshold_specificity": at.get("specificity"),
    }


def train_and_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from training.ml.train.evaluate import evaluate_checkpoint
    from training.ml.train.fit import fit
    from training.ml.train.scan import scan_image_folder
    from training.ml.train.splits import scan_groups, stratified_split

    overrides = _known(RECIPES[args.recipe])
    config = TrainConfig(
        arch="mobilenet_v2",
        weights=str(Path(args.weights).resolve()),
        strategy=args.strategy,
        epochs=args.epochs,
        batch_size=args.batch_size,
        input_size=224,
        num_threads=args.threads,
        num_workers=1,
        seed=args.seed,
        cache_dir=args.cache_dir,
        max_steps_per_epoch=args.max_steps,
        **overrides,
    )
    scan = scan_image_folder(args.data, verify=True)
    groups = scan_groups(scan, patterns=PATIENT_PATTERNS)
    split = stratified_split(
        [label for _, label in scan.samples], seed=args.seed, group_ids=groups.group_ids
    )
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix=f"recipe-{args.recipe}-"))
    result = fit(
        config, args.data, scan, split, checkpoint_path=workdir / "model.pth", classes=None
    )
    train_s = time.perf_counter() - started
    evaluations = [{}, {"tta": True}] if args.tta_also else [{}]
    sets: dict[str, Any] = {}

    def evaluate(name: str, root: str, samples: list[tuple[str, int]], tta: bool = True) -> None:
        for extra in evaluations if tta else [{}]:
            out = evaluate_checkpoint(
                result.checkpoint_path,
                root,
                samples,
                list(range(len(samples))),
                CLASSES,
                batch_size=64,
                **extra,
            )
            sets[name + (" +TTA" if extra else "")] = _summary(out["metrics"])

    evaluate("kermany grouped test", args.data, [scan.samples[i] for i in split["test"]])
    if args.cross:
        mapping = {"Normal": "NORMAL", "Viral_Pneumonia": "PNEUMONIA"}
        evaluate("covid-3way (adult)", args.cross, _mapped(args.cross, mapping))
    if args.normals:
        evaluate(
            "covid-radiography Normal",
            args.normals,
            _mapped(args.normals, {"Normal": "NORMAL"}),
            tta=False,
        )
    return {
        "recipe": args.recipe,
        "config": result.config,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "history": [
            {k: row[k] for k in ("epoch", "train_loss", "val_loss", "val_acc", "lr")}
            for row in result.history
        ],
        "train_seconds": train_s,
        "split": {name: len(v) for name, v in split.items()},
        "patients_grouped": groups.used,
        "sets": sets,
    }


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(paths: list[str]) -> str:
    reports = [json.loads(Path(p).read_text()) for p in paths]
    cols = ["accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc", "ece"]
    lines = [
        "| set | recipe | n | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    names = list(dict.fromkeys(name for report in reports for name in report["sets"]))
    for name in names:
        for report in reports:
            figures = report["sets"].get(name)
            if figures is None:
                continue
            cells = " | ".join(_fmt(figures[c]) for c in cols)
            lines.append(f"| {name} | {report['recipe']} | {figures['n']} | {cells} |")
    for report in reports:
        lines.append(
            f"\n{report['recipe']}: best epoch {report['best_epoch']} of "
            f"{len(report['history'])}, {report['train_seconds'] / 60:.1f} min training"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", nargs="+", help="print the markdown table of these JSON runs")
    parser.add_argument("--data", help="kermany-pediatric folder (NORMAL/, PNEUMONIA/)")
    parser.add_argument("--weights", help="local mobilenet_v2 ImageNet features file")
    parser.add_argument("--cross", help="covid-3way folder (Normal/, Viral_Pneumonia/)")
    parser.add_argument("--normals", help="covid-radiography folder (its Normal/ is used)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="new")
    parser.add_argument("--strategy", default="partial", choices=["head", "partial", "full"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None, help="batches per epoch at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", help="write the JSON report here")
    parser.add_argument(
        "--tta-also",
        action="store_true",
        help="evaluate every set again with test-time augmentation",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.table:
        print(table(args.table))
        return 0
    if not (args.data and args.weights):
        parser.error("--data and --weights are needed to train")
    report = train_and_evaluate(args)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
