"""A STAT upload's end-to-end time while a training run is going (issue #22, item 7).

```bash
.venv/bin/python bench/stat_during_training.py [--layout split|shared|both] [--dataset DIR] \
    [--arch mobilenet_v2] [--train-arch resnet18] [--count 3] [--broker-url redis://127.0.0.1:6379/14]
```

Starts the app as bench/stack.py does (a fresh PostgreSQL database, a flushed Redis database,
gunicorn, a promoted model), in one of two worker layouts:

- ``split``: what `make run` starts (scripts/run.sh): one worker for `inference,maintenance`
  with one pool process per core, and the training queue's own worker (one pool process,
  nice 19);
- ``shared``: the layout before issue #22, one worker serving `inference,training,maintenance`.

It measures ``--count`` STAT uploads one at a time with nothing else going on (``idle``), then
queues ``--runs`` training runs (`manage.py train --queue`; two, as in issue #22, so that in the
shared layout they hold every pool process of a 2-core host) on ``--dataset`` (an ImageFolder:
one sub-folder per class) or on a synthetic one made here, waits until a run is training, and
measures ``--count`` STAT uploads again (``during_training``): POST → prediction done → heatmap
fetched. ``runs_at_end`` gives the runs' statuses when the last STAT was done (a run that
finished meanwhile freed its pool process: the figure after that is not "during training";
give more ``--epochs``). Figures in ms, printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on sys.path: put the repo there instead.
if sys.path and Path(sys.path[0]).resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.client import ApiClient, ApiError, multipart  # noqa: E402
from bench.stack import Stack, StackConfig  # noqa: E402

STAT = "2"  # diagnosis.models.Study.Priority.STAT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layout", choices=["split", "shared", "both"], default="both")
    p.add_argument("--arch", default="mobilenet_v2", help="the production model (inference)")
    p.add_argument("--classes", default="normal,pneumonia")
    p.add_argument("--backbone-weights", type=Path, default=None)
    p.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="an ImageFolder to train on (default: a synthetic one made here)",
    )
    p.add_argument("--synthetic-per-class", type=int, default=40)
    p.add_argument("--train-arch", default="resnet18")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--runs", type=int, default=2, help="training runs queued")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--count", type=int, default=3, help="STAT uploads per phase")
    p.add_argument("--image-size", type=int, default=1024, help="the STAT image's side (px)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=os.cpu_count() or 1,
        help="pool processes of the inference worker (make run: one per core)",
    )
    p.add_argument(
        "--training-wait",
        type=float,
        default=300,
        help="seconds to wait for the run to start training",
    )
    p.add_argument("--settle", type=float, default=3, help="seconds of training before measuring")
    p.add_argument("--broker-url", default="redis://127.0.0.1:6379/14")
    p.add_argument("--pg-admin-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--keep", action="store_true")
    return p.parse_args(argv)


def synthetic_dataset(root: Path, classes: list[str], per_class: int) -> Path:
    """An ImageFolder of synthetic chest-X-ray-like PNGs (tests/imagegen), one folder per class."""
    from tests import imagegen

    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = imagegen.make_xray(320, 320, seed=1000 * c + i)
            (folder / f"{name}-{i:03d}.png").write_bytes(imagegen.png_bytes(img))
    return root


def stat_upload_ms(client: ApiClient, data: bytes, patient_id: str) -> float:
    """POST a STAT study, poll its prediction until done, fetch the heatmap: wall ms."""
    started = time.perf_counter()
    body, ctype = multipart(
        {"patient_id": patient_id, "view": "PA", "priority": STAT}, "image", "stat.png", data
    )
    resp = client.request("POST", "/api/v1/studies/", body, ctype)
    if resp.status != 201:
        raise ApiError(f"STAT upload: {resp.status} {resp.body[:300]!r}")
    prediction_id = int(resp.json()["prediction_id"])
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        p = client.prediction(prediction_id)
        if p["status"] == "done":
            client.overlay(p["overlay_url"])
            return (time.perf_counter() - started) * 1000.0
        if p["status"] == "failed":
            raise ApiError(f"prediction {prediction_id} failed: {p['error']}")
        time.sleep(0.02)
    raise TimeoutError(f"prediction {prediction_id} not done within 600 s")


def _runs(database_url: str) -> list[tuple[str, dict]]:
    """(status, progress) of every training run, oldest first."""
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT status, progress FROM training_trainingrun ORDER BY id"
        ).fetchall()
    return [(row[0], row[1] or {}) for row in rows]


def wait_for_training(database_url: str, timeout_s: float) -> dict:
    """Until a run reports a training step; its progress."""
    deadline = time.monotonic() + timeout_s
    runs: list[tuple[str, dict]] = []
    while time.monotonic() < deadline:
        runs = _runs(database_url)
        ended = [r for r in runs if r[0] in ("failed", "cancelled", "done")]
        if ended:
            raise RuntimeError(f"a training run ended before the measurement: {ended[0]}")
        training = [
            p for status, p in runs if status == "running" and p.get("phase") in ("train", "val")
        ]
        if training:
            return training[0]
        time.sleep(0.5)
    raise TimeoutError(f"no training run started training within {timeout_s:.0f} s: {runs}")


def measure(args: argparse.Namespace, layout: str) -> dict:
    from tests import imagegen

    classes = [c for c in args.classes.split(",") if c]
    queues = "inference,maintenance" if layout == "split" else "inference,training,maintenance"
    cfg = StackConfig(
        repo=REPO,
        python=Path(sys.executable),
        arch=args.arch,
        classes=classes,
        backbone_weights=args.backbone_weights,
        workers=1,
        concurrency=args.concurrency,
        broker_url=args.broker_url,
        pg_admin_url=args.pg_admin_url,
        keep=args.keep,
        queues=queues,
    )
    stack = Stack(cfg)
    try:
        stack.start()
        if layout == "split":
            stack.start_training_worker(nice=19)
        client = ApiClient("127.0.0.1", stack.port, stack.token)
        client.wait_until_up(60)
        data = imagegen.png_bytes(imagegen.make_xray(args.image_size, args.image_size, seed=7))
        stat_upload_ms(client, data, "BENCH-WARM")  # the model loads here: not measured
        idle = [stat_upload_ms(client, data, f"BENCH-IDLE-{i}") for i in range(args.count)]

        if args.dataset:
            root = args.dataset.resolve()
            stack.env["CXR_DATASET_ROOTS"] = str(root.parent)
        else:
            root = synthetic_dataset(
                stack.tmp / "var" / "datasets" / "synthetic", classes, args.synthetic_per_class
            )
        stack.manage("register_dataset", "bench", str(root), timeout_s=600)
        for _ in range(args.runs):
            print(
                stack.manage(
                    "train",
                    "--queue",
                    "--dataset",
                    "bench",
                    "--arch",
                    args.train_arch,
                    "--weights",
                    "none",
                    "--strategy",
                    "full",
                    "--epochs",
                    str(args.epochs),
                    "--batch-size",
                    str(args.batch_size),
                    "--input-size",
                    str(args.input_size),
                    "--patience",
                    "0",
                ).strip()
            )
        progress = wait_for_training(stack.database_url, args.training_wait)
        time.sleep(args.settle)
        during = [stat_upload_ms(client, data, f"BENCH-STAT-{i}") for i in range(args.count)]
        runs = [status for status, _ in _runs(stack.database_url)]
        stack.check_alive()
        return {
            "layout": layout,
            "worker_queues": (
                [queues, "training (own worker, 1 process, nice 19)"]
                if layout == "split"
                else [queues]
            ),
            "inference_pool_processes": args.concurrency,
            "cpus": os.cpu_count(),
            "training": {
                "arch": args.train_arch,
                "input_size": args.input_size,
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "runs": args.runs,
                "progress_at_start": progress,
            },
            "idle_ms": [round(x) for x in idle],
            "during_training_ms": [round(x) for x in during],
            "idle_median_ms": round(statistics.median(idle)),
            "during_training_median_ms": round(statistics.median(during)),
            "during_training_max_ms": round(max(during)),
            "runs_at_end": runs,
        }
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    layouts = ["shared", "split"] if args.layout == "both" else [args.layout]
    report = [measure(args, layout) for layout in layouts]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
