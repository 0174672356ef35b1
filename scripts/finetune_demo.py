"""Fine-tune a backbone on an ImageFolder dataset and print test metrics: a sanity run, not a test.

Example (the data and weights on hand, a few minutes on 2 CPU cores):

    .venv/bin/python scripts/finetune_demo.py --data ../shared/data/covid-radiography \\
        --arch mobilenet_v2 --weights ../shared/weights/mobilenet_v2-imagenet-features.pth \\
        --strategy head --epochs 2 --max-steps 20

Writes the checkpoint, the result JSON and the four plots to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.ml.data import (  # noqa: E402
    duplicate_group_ids,
    duplicates_by_hash,
    scan_image_folder,
    stratified_split,
)
from training.ml.plots import (  # noqa: E402
    plot_confusion_matrix,
    plot_history,
    plot_reliability,
    plot_roc,
)
from training.ml.train import STRATEGIES, TrainConfig, fit  # noqa: E402


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="ImageFolder root (one folder per class)")
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--weights", default=None, help="'imagenet', a backbone file, or none")
    parser.add_argument("--strategy", choices=STRATEGIES, default="head")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None, help="training batches per epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="var/finetune-demo", help="folder for the outputs")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    scan = scan_image_folder(args.data)
    groups = duplicates_by_hash(args.data, scan.samples, hashes=scan.sha256)
    split = stratified_split(
        scan.labels, seed=args.seed, group_ids=duplicate_group_ids(len(scan.samples), groups)
    )
    print(
        f"scan: {len(scan.samples)} images {scan.class_counts}, {len(scan.unreadable)} "
        f"unreadable, {len(scan.skipped)} skipped, {len(groups)} duplicate groups "
        f"({time.perf_counter() - started:.1f} s)"
    )
    print("split:", {name: len(indices) for name, indices in split.items()})

    config = TrainConfig(
        arch=args.arch,
        weights=args.weights,
        strategy=args.strategy,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        num_threads=args.threads,
        num_workers=args.workers,
        max_steps_per_epoch=args.max_steps,
        input_size=args.input_size,
    )
    last_line = [0.0]

    def progress(event: dict) -> None:
        now = time.monotonic()
        if now - last_line[0] < 5 and event["step"] < event["steps"]:
            return
        last_line[0] = now
        loss = _fmt(event["loss"], "{:.4f}")
        speed = _fmt(event["images_per_s"], "{:.1f}")
        print(
            f"  [{event['phase']:<9}] epoch {event['epoch']}/{event['epochs']} "
            f"step {event['step']}/{event['steps']} loss {loss} {speed} img/s "
            f"eta {event['eta_s']:.0f} s",
            flush=True,
        )

    fit_started = time.perf_counter()
    result = fit(
        config,
        args.data,
        scan,
        split,
        checkpoint_path=out / "model.pt",
        progress_callback=progress,
    )
    fit_seconds = time.perf_counter() - fit_started

    print(f"\n{result.strategy_summary}")
    if result.backbone_report:
        print(f"backbone: {result.backbone_report}")
    for row in result.history:
        print(
            f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}"
            f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} | lr {row['lr']:.2e}"
            f" | train {row['images_per_s']:.1f} img/s, val {row['val_images_per_s']:.1f} img/s"
        )
    print(f"best epoch {result.best_epoch}, temperature {result.temperature:.3f}")
    print(
        "thresholds (val, sensitivity >= 0.9):",
        {k: round(v, 3) for k, v in (result.thresholds or {}).items()},
    )
    metrics = result.test_metrics
    if metrics is not None:
        print(
            f"\ntest n={metrics['n']}: accuracy {metrics['accuracy']:.3f}, balanced "
            f"{metrics['balanced_accuracy']:.3f}, macro AUC {_fmt(metrics['macro_auc'])}, macro F1 "
            f"{_fmt(metrics['macro_f1'])}"
        )
        print(
            f"ECE {metrics['ece_uncalibrated']:.3f} before temperature scaling, "
            f"{metrics['ece_calibrated']:.3f} after; NLL {metrics['nll_uncalibrated']:.3f} -> "
            f"{metrics['nll_calibrated']:.3f}; Brier {metrics['brier']:.3f}"
        )
        for name, figures in metrics["per_class"].items():
            at = figures.get("at_threshold") or {}
            print(
                f"  {name:<12} sens {_fmt(figures['sensitivity'])} spec "
                f"{_fmt(figures['specificity'])} PPV {_fmt(figures['precision'])} AUC "
                f"{_fmt(figures['auc'])} | at threshold {_fmt(at.get('threshold'))}: sens "
                f"{_fmt(at.get('sensitivity'))} spec {_fmt(at.get('specificity'))}"
            )
        print("  confusion matrix (rows true, cols predicted):", metrics["confusion_matrix"])
        print(f"  test eval {_fmt(metrics.get('images_per_s'), '{:.1f}')} img/s")
        curves = result.test_curves or {}
        aucs = {name: f["auc"] for name, f in metrics["per_class"].items()}
        (out / "roc.png").write_bytes(plot_roc(curves["roc"], aucs))
        (out / "reliability.png").write_bytes(
            plot_reliability(curves["reliability"], metrics["ece"])
        )
        (out / "confusion.png").write_bytes(
            plot_confusion_matrix(metrics["confusion_matrix"], result.classes)
        )
    (out / "history.png").write_bytes(plot_history(result.history, best_epoch=result.best_epoch))
    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    print(
        f"\nfit {fit_seconds:.0f} s, total {time.perf_counter() - started:.0f} s; checkpoint "
        f"{result.checkpoint_path} (sha256 {str(result.sha256)[:12]}...), outputs in {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
