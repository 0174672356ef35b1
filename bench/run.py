"""Benchmark the whole app, started from scratch on loopback, through its JSON API.

    .venv/bin/python bench/run.py --images /work/shared/data/covid-radiography \
        --arch mobilenet_v2 [--workers N] [--clients 1,8,32] [--count N] [--out report.json]

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on sys.path: put the repo there instead, so
# `bench.*`, `training`, `diagnosis` resolve to the packages and nothing in bench/ shadows them.
if sys.path and Path(sys.path[0]).resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import load, monitor  # noqa: E402
from bench.client import ApiClient  # noqa: E402
from bench.phases import Bench, done_counter  # noqa: E402
from bench.report import finish, rss_report  # noqa: E402
from bench.stack import Stack, StackConfig  # noqa: E402

log = logging.getLogger("bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--images",
        type=Path,
        required=True,
        help="folder of chest X-rays (*.jpg, *.png, *.dcm, searched recursively)",
    )
    p.add_argument("--arch", default="mobilenet_v2")
    p.add_argument("--classes", default="normal,pneumonia")
    p.add_argument(
        "--backbone-weights",
        type=Path,
        help="ImageNet features file loaded into the backbone (meaningful CAMs)",
    )
    p.add_argument("--workers", type=int, default=1, help="Celery workers (default 1)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=os.cpu_count() or 1,
        help="pool processes per Celery worker (default: the CPU count, as `make run` starts it)",
    )
    p.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--web-threads", type=int, default=1, help="threads per gunicorn worker")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="CXR_TORCH_THREADS for the workers (0: the app's default)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="CXR_INFERENCE_BATCH_SIZE for the workers (0: the app's default, by device)",
    )
    p.add_argument("--clients", default="1,8,32", help="concurrency levels of the upload phase")
    p.add_argument(
        "--uploads-per-level",
        type=int,
        default=24,
        help="uploads per concurrency level (at least 2 per client)",
    )
    p.add_argument("--count", type=int, default=200, help="uploads in the sustained-load phase")
    p.add_argument("--load-clients", type=int, default=8, help="clients of the sustained phase")
    p.add_argument(
        "--async-rate",
        type=float,
        default=0.0,
        help="uploads/s offered by the open-loop asynchronous phase (bench/async_load.py); 0: skip",
    )
    p.add_argument("--async-seconds", type=float, default=10.0, help="its length, seconds")
    p.add_argument("--idle-count", type=int, default=10, help="one-at-a-time end-to-end runs")
    p.add_argument("--floor-count", type=int, default=50, help="images for the compute floor")
    p.add_argument("--poll-interval", type=float, default=0.05, help="seconds between polls")
    p.add_argument("--idle-poll-interval", type=float, default=0.02)
    p.add_argument(
        "--phase-timeout",
        type=float,
        default=600.0,
        help="seconds a phase may wait for its predictions",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=600.0,
        help="seconds the web server and each worker may take to start (one that dies ends "
        "the wait at once)",
    )
    p.add_argument(
        "--worker-nice",
        type=int,
        default=None,
        help="CXR_WORKER_NICE for the workers (default: the app's, 10)",
    )
    p.add_argument(
        "--skip-paused", action="store_true", help="skip the upload phase with the workers paused"
    )
    p.add_argument("--skip-training", action="store_true", help="skip the training figures")
    p.add_argument("--database-url", help="an existing (empty) database instead of a fresh one")
    p.add_argument(
        "--db-url-query",
        default="",
        help="django-environ options appended to the app's DATABASE_URL, e.g. conn_max_age=60",
    )
    p.add_argument(
        "--pg-admin-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="where to CREATE/DROP the fresh database",
    )
    p.add_argument(
        "--broker-url",
        default="redis://127.0.0.1:6379/14",
        help="Redis database for Celery (flushed at start)",
    )
    p.add_argument(
        "--py-spy",
        default="auto",
        help="py-spy executable to profile a worker and gunicorn ('auto', 'off')",
    )
    p.add_argument(
        "--training-images",
        type=Path,
        help="ImageFolder for the training figures (default: --images)",
    )
    p.add_argument(
        "--training-limit",
        type=int,
        default=64,
        help="images in the one timed training epoch per strategy",
    )
    p.add_argument(
        "--model-server",
        choices=("auto", "on", "off"),
        default="auto",
        help="the workers' CXR_MODEL_SERVER (auto: a model server per GPU where there is one)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="wait up to this many seconds for the machine to be idle first",
    )
    p.add_argument("--out", type=Path, help="write the JSON report here")
    p.add_argument("--logs", type=Path, help="copy the app's logs into this folder")
    p.add_argument("--keep", action="store_true", help="keep the database and temporary files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the app's processes")
    args = p.parse_args(argv)
    args.client_levels = [int(c) for c in args.clients.split(",") if c.strip()]
    if (
        args.workers < 1
        or args.concurrency < 1
        or args.count < 1
        or min(args.client_levels, default=0) < 1
    ):
        p.error("--workers, --count and --clients must be positive")
    if not args.images.is_dir():
        p.error(f"--images: {args.images} is not a folder")
    for option, path in (
        ("--backbone-weights", args.backbone_weights),
        ("--training-images", args.training_images),
    ):
        if path is not None and not path.exists():
            p.error(f"{option}: {path} does not exist")
    return args


def stack_config(args: argparse.Namespace) -> StackConfig:
    """The app to start, from the command line."""
    return StackConfig(
        repo=REPO,
        python=Path(sys.executable),
        arch=args.arch,
        classes=[c for c in args.classes.split(",") if c],
        backbone_weights=args.backbone_weights,
        workers=args.workers,
        concurrency=args.concurrency,
        web_workers=args.web_workers,
        web_threads=args.web_threads,
        database_url=args.database_url,
        pg_admin_url=args.pg_admin_url,
        broker_url=args.broker_url,
        torch_threads=args.torch_threads,
        batch_size=args.batch_size,
        model_server=args.model_server,
        db_url_query=args.db_url_query,
        log_level=args.log_level,
        keep=args.keep,
        seed=args.seed,
        ready_timeout_s=args.ready_timeout,
        worker_nice=args.worker_nice,
    )


def run_phases(
    args: argparse.Namespace, stack: Stack, source: load.ImageSource, report: dict
) -> tuple[dict, list[str]]:
    """Start the app, run every phase on it, stop it; the report (`report`'s keys first) and
    the workers' devices. An error ends the phases early and is the report's `aborted`."""
    sampler: monitor.RssSampler | None = None
    counter = None
    devices: list[str] = []
    bench: Bench | None = None
    try:
        log.info("starting the app (%d worker(s)) in %s", args.workers, stack.tmp)
        stack.start()
        client = ApiClient("127.0.0.1", stack.port, stack.token)
        client.wait_until_up(args.ready_timeout, check=stack.check_alive)
        counter = done_counter(stack.database_url)
        sampler = monitor.RssSampler([w.pid for w in stack.workers], counter)
        rss_start = sampler.sample()
        sampler.start()
        bench = Bench(args, stack, client, source)
        bench.report.update(report)
        report = bench.report
        log.info("phase: warm-up")
        bench.warmup()
        rss_warm = sampler.sample()
        phases = [
            ("idle end-to-end", bench.idle),
            ("uploads, workers running", bench.uploads_running),
            ("uploads, workers paused", bench.uploads_paused),
            ("sustained load", bench.sustained),
        ]
        if args.async_rate > 0:
            phases.append(("open-loop asynchronous load", bench.async_load))
        for name, phase in phases:
            if name.endswith("paused") and args.skip_paused:
                continue
            log.info("phase: %s", name)
            phase()
            stack.check_alive()
        report["worker_rss_mb"] = rss_report(sampler, rss_start, rss_warm)
        log.info("phase: compute floor")
        bench.floor()
        log.info("phase: training")
        bench.training()
        report["errors"] = bench.failures
        devices = sorted(d for d in bench.devices if d)
    except Exception as exc:
        log.exception("the benchmark stopped early")
        report["aborted"] = f"{type(exc).__name__}: {exc}"[:3000]
    finally:
        if sampler:
            sampler.stop()
        if counter:
            counter.close()  # type: ignore[attr-defined]
        if bench:
            bench.pg.close()
        if args.logs:
            stack.save_logs(args.logs)
        report["_model_execution_workers"] = stack.model_executions()  # before stop: its logs
        stack.stop()
    return report, devices


def _terminate(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # One line per request of the open-loop phase (thousands a second on a fast host) would cost
    # the driver CPU while it measures.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _terminate)
    files = load.find_images(args.images, args.seed)
    source = load.ImageSource(files)
    stack = Stack(stack_config(args))
    started = time.monotonic()
    report: dict = {"_machine": monitor.wait_quiet(args.wait_quiet)}
    report, devices = run_phases(args, stack, source, report)
    report = finish(report, args, stack, len(files), source, devices, time.monotonic() - started)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if "aborted" in report else 0


if __name__ == "__main__":
    sys.exit(main())
