"""Benchmark the whole app, started from scratch on loopback, through its JSON API.

    .venv/bin/python bench/run.py --images /work/shared/data/covid-radiography \
        --arch mobilenet_v2 [--workers N] [--clients 1,8,32] [--count N] [--out report.json]

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import subprocess
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

from bench import load, monitor, pyspy  # noqa: E402
from bench.client import ApiClient, parse_time  # noqa: E402
from bench.stack import Stack, StackConfig  # noqa: E402
from bench.stats import rate, summary  # noqa: E402

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
    if args.workers < 1 or args.concurrency < 1 or args.count < 1 or min(args.client_levels, default=0) < 1:
        p.error("--workers, --count and --clients must be positive")
    if not args.images.is_dir():
        p.error(f"--images: {args.images} is not a folder")
    for option, path in (("--backbone-weights", args.backbone_weights),
                         ("--training-images", args.training_images)):
        if path is not None and not path.exists():
            p.error(f"{option}: {path} does not exist")
    return args


# --- environment facts --------------------------------------------------------------------


def git_commit() -> dict:
    """The checkout's commit; outside a git checkout (a `git archive` copy), a REVISION file."""

    def git(*a: str) -> str:
        done = subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        if commit:
            return {"commit": commit, "dirty_files": len(git("status", "--porcelain").splitlines())}
    except (OSError, subprocess.SubprocessError):
        pass
    revision = REPO / "REVISION"
    return {"commit": revision.read_text().strip() if revision.exists() else None}


def done_counter(database_url: str):
    """A function returning how many predictions are finished (done or failed), from the DB."""
    import psycopg

    conn = psycopg.connect(database_url, autocommit=True, connect_timeout=10)

    def count() -> int:
        row = conn.execute(
            "SELECT count(*) FROM diagnosis_prediction WHERE status IN ('done', 'failed')"
        ).fetchone()
        return int(row[0]) if row else 0

    count.close = conn.close  # type: ignore[attr-defined]
    return count


# --- phases ---------------------------------------------------------------------------------


class Bench:
    """The phases of one run, in order; each adds its figures to `self.report`."""

    def __init__(
        self, args: argparse.Namespace, stack: Stack, client: ApiClient, source: load.ImageSource
    ) -> None:
        self.args, self.stack, self.client, self.source = args, stack, client, source
        self.window = args.workers * args.concurrency + 1
        self.report: dict = {}
        self.failures: list[str] = []
        self.py_spy = (
            None
            if args.py_spy == "off"
            else pyspy.find_py_spy(None if args.py_spy == "auto" else args.py_spy)
        )
        self.pg = monitor.PgStats(stack.database_url)
        self.burst_paths: list[str] = []
        self.devices: set[str | None] = set()

    def cpu_groups(self) -> dict[str, list[int]]:
        return {
            "gunicorn": [self.stack.web.pid],
            "celery_workers": [w.pid for w in self.stack.workers],
        }

    def note_failures(self, phase: str, tracker: load.Tracker | None, items: list[load.Item]):
        bad = [i for i in items if i.prediction_id is None]
        if tracker is not None:
            bad += tracker.failed
        for item in bad[:5]:
            self.failures.append(f"{phase}: {item.path.name}: {item.error}")
        if bad:
            self.failures.append(f"{phase}: {len(bad)} of {len(items)} failed")

    def warmup(self) -> None:
        """The first prediction: the worker child loads the model (lazily) here."""
        a = self.args
        cold = load.run_idle(self.client, self.source, 1, a.idle_poll_interval, a.phase_timeout)
        self.note_failures("warm-up", None, cold)
        self.report["end_to_end_ms"] = {"cold_first": round(cold[0].e2e_ms or -1, 1)}

    def idle(self) -> None:
        a = self.args
        before, started = monitor.cpu_snapshot(self.cpu_groups()), time.perf_counter()
        items = load.run_idle(
            self.client, self.source, a.idle_count, a.idle_poll_interval, a.phase_timeout
        )
        cpu = monitor.cpu_delta(
            before, monitor.cpu_snapshot(self.cpu_groups()), time.perf_counter() - started
        )
        self.note_failures("idle", None, items)
        self.devices.update(i.server.get("device") for i in items)
        e2e = [i.e2e_ms for i in items if i.e2e_ms is not None]
        self.report["end_to_end_ms"]["idle"] = summary(e2e, (50, 95, 99))
        self.report["idle_breakdown"] = {
            "upload_ms": summary([i.upload_ms for i in items], (50, 95)),
            "heatmap_get_ms": summary([i.heatmap_ms or 0 for i in items], (50, 95)),
            **load.server_breakdown(items),
            "other_processes_cpu_share": cpu["share_of_cores"].get("other"),
        }

    def uploads_running(self) -> None:
        """Upload latency while the workers run (what users feel): the queue grows per level and
        is drained before the next level."""
        a = self.args
        out: dict = {}
        for clients in a.client_levels:
            n = max(a.uploads_per_level, 2 * clients)
            items, wall = load.upload_level(self.client, self.source, clients, n, f"c{clients}")
            tracker = load.drain(self.client, items, self.window, a.poll_interval, a.phase_timeout)
            self.note_failures(f"upload c{clients}", tracker, items)
            out[f"c{clients}"] = load.upload_stats(items, wall)
        self.report["upload_ms"] = out

    def uploads_paused(self) -> None:
        """Upload latency with every worker SIGSTOPped (the request path alone), then the
        backlog's drain rate once they are resumed.

        The profiles are taken outside the measured rounds (py-spy costs CPU): gunicorn during
        an extra, unmeasured round of uploads, a pool child during the drain.
        """
        a = self.args
        out: dict = {}
        backlog: list[load.Item] = []
        self.stack.pause_workers()
        try:
            for clients in a.client_levels:
                n = max(a.uploads_per_level, 2 * clients)
                before = monitor.cpu_snapshot(self.cpu_groups())
                pg_before = self.pg.snapshot()
                items, wall = load.upload_level(self.client, self.source, clients, n, f"p{clients}")
                cpu = monitor.cpu_delta(before, monitor.cpu_snapshot(self.cpu_groups()), wall)
                stats = load.upload_stats(items, wall)
                ok = max(1, stats["n"])
                stats["gunicorn_cpu_ms_per_upload"] = round(cpu["cpu_s"]["gunicorn"] * 1000 / ok, 1)
                stats["postgres_cpu_ms_per_upload"] = round(cpu["cpu_s"]["postgres"] * 1000 / ok, 1)
                stats["db_per_upload"] = self.pg.delta(pg_before, ok)
                out[f"c{clients}"] = stats
                backlog += items
            backlog += self._profile_web_uploads()
        finally:
            self.stack.resume_workers()
        self.report["upload_ms_workers_paused"] = out
        child = monitor.pool_children(self.stack.workers[0].pid)
        spy = self._spy(child[0].pid, "worker") if child else None
        resumed = time.perf_counter()
        before = monitor.cpu_snapshot(self.cpu_groups())
        try:
            tracker = load.drain(
                self.client, backlog, self.window, a.poll_interval, a.phase_timeout
            )
        finally:
            if spy:
                spy.stop()
        wall = time.perf_counter() - resumed
        self.note_failures("paused uploads", tracker, backlog)
        cpu = monitor.cpu_delta(before, monitor.cpu_snapshot(self.cpu_groups()), wall)
        self.report["backlog_drain"] = {
            "predictions": len(tracker.completed),
            "per_s": rate(len(tracker.completed), wall),
            "worker_cpu_ms_per_prediction": round(
                cpu["cpu_s"]["celery_workers"] * 1000 / max(1, len(tracker.completed)), 1
            ),
            "profiled_with_py_spy": spy is not None,
            "cpu": cpu,
        }
        if spy:
            self.report.setdefault("profile", {})["worker_during_drain"] = pyspy.summarize(
                spy.out, pyspy.WORKER_BUCKETS, spy.seconds, spy.rate
            )

    def _profile_web_uploads(self) -> list[load.Item]:
        """An extra, unmeasured round of uploads (8 clients) under py-spy; its items."""
        spy = self._spy(self.stack.web.pid, "web", subprocesses=True)
        if spy is None:
            return []
        time.sleep(1.0)  # let py-spy attach to the gunicorn workers
        try:
            items, _ = load.upload_level(
                self.client, self.source, 8, max(self.args.uploads_per_level, 16), "prof"
            )
        finally:
            spy.stop()
        self.report.setdefault("profile", {})["web_during_uploads"] = pyspy.summarize(
            spy.out, pyspy.WEB_BUCKETS, spy.seconds, spy.rate, processes=self.args.web_workers
        )
        return items

    def sustained(self) -> None:
        """--count uploads as fast as --load-clients can send them; throughput and loaded e2e."""
        a = self.args
        before = monitor.cpu_snapshot(self.cpu_groups())
        pg_before = self.pg.snapshot()
        started = time.perf_counter()
        tracker, items, span = load.run_burst(
            self.client,
            self.source,
            a.count,
            a.load_clients,
            self.window,
            a.poll_interval,
            a.phase_timeout,
        )
        wall = time.perf_counter() - started
        cpu = monitor.cpu_delta(before, monitor.cpu_snapshot(self.cpu_groups()), wall)
        self.note_failures("sustained", tracker, items)
        done = tracker.completed
        self.devices.update(i.server.get("device") for i in done)
        self.burst_paths = [str(i.path) for i in items]
        self.report["throughput_per_s"] = rate(len(done), span)
        # The same from the server's timestamps (first POST to last finished_at): without the
        # lag of the benchmark's own polling and heatmap GETs, which compete for the web workers.
        finished = [parse_time(i.server.get("finished_at")) for i in done]
        finished_wall = [f for f in finished if f is not None]
        if finished_wall:
            first_post = min(i.wall_start for i in items)
            self.report["throughput_server_per_s"] = rate(
                len(finished_wall), max(finished_wall) - first_post
            )
        self.report["end_to_end_ms"]["loaded"] = summary([i.e2e_ms for i in done], (50, 95, 99))
        breakdown = load.server_breakdown(done)
        breakdown["worker_busy_share"] = round(
            _busy_ms(done) / 1000 / (span * a.workers * a.concurrency), 3)
        breakdown["upload_ms_under_load"] = load.upload_stats(items, span)
        breakdown["polls"] = tracker.polls
        breakdown["worker_cpu_ms_per_prediction"] = round(
            cpu["cpu_s"]["celery_workers"] * 1000 / max(1, len(done)), 1
        )
        breakdown["cpu"] = cpu
        # per completed study: the upload, the worker's task, the polls and the heatmap GET
        breakdown["db_per_completed_study"] = self.pg.delta(pg_before, len(done))
        self.report["sustained"] = {"completed": len(done), "span_s": round(span, 2), **breakdown}

    def _spy(self, pid: int, name: str, subprocesses: bool = False) -> pyspy.PySpy | None:
        if not self.py_spy:
            return None
        return pyspy.PySpy(
            self.py_spy, pid, self.stack.tmp / f"pyspy-{name}.txt", subprocesses=subprocesses
        )

    def floor(self) -> None:
        a = self.args
        paths = self.burst_paths or [str(p) for p in self.source.files]
        images_json = self.stack.tmp / "floor-images.json"
        images_json.write_text(json.dumps(paths[: a.floor_count]))
        out = self.stack.tmp / "floor.json"
        self.stack.run_python(
            [
                "-m",
                "bench.ml",
                "floor",
                "--images",
                str(images_json),
                "--count",
                str(a.floor_count),
                "--concurrency",
                str(a.concurrency),
                "--plain-weights",
                str(self.stack.plain_weights),
                "--out",
                str(out),
            ],
            timeout_s=600,
        )
        floor = json.loads(out.read_text())
        self.report["floor_per_s"] = floor["floor_per_s"]
        self.report["floor"] = floor
        tput = self.report.get("throughput_per_s")
        self.report["ratio"] = round(tput / floor["floor_per_s"], 3) if tput else None
        plain = floor.get("plain_script")
        if plain:
            # The baseline a user would write without the app (torchvision + pytorch-grad-cam as
            # its README shows); `ratio` stays against the app's own, faster, Predictor.
            self.report["plain_script_floor_per_s"] = plain["per_s"]
            self.report["ratio_vs_plain_script"] = round(tput / plain["per_s"], 3) if tput else None
        # The same comparison in CPU time (robust to other processes on a shared machine): the
        # floor's CPU per image (predict + PNG rendering) over the Celery processes' CPU per
        # prediction in the sustained phase.
        worker_cpu = self.report.get("sustained", {}).get("worker_cpu_ms_per_prediction")
        if worker_cpu:
            self.report["ratio_cpu"] = round(floor["cpu_ms_per_image_with_render"] / worker_cpu, 3)
            # What a prediction costs the workers beyond one plain process with the workers' own
            # threads doing predict + render: queueing, database, files, Celery, and two pool
            # processes sharing the cores' caches.
            same = floor.get("same_threads", {}).get("cpu_ms_per_image_with_render")
            if same:
                self.report["worker_cpu_ms_beyond_same_threads_floor"] = round(worker_cpu - same, 1)

    def training(self) -> None:
        a = self.args
        if a.skip_training:
            self.report["training"] = {"skipped": "--skip-training"}
            return
        if not (REPO / "training" / "ml" / "train" / "loop.py").exists():
            self.report["training"] = {"skipped": "training.ml.train.loop not available"}
            return
        out = self.stack.tmp / "training.json"
        cmd = [
            "-m",
            "bench.ml",
            "training",
            "--images",
            str(a.training_images or a.images),
            "--arch",
            "mobilenet_v2",
            "--limit",
            str(a.training_limit),
            "--out",
            str(out),
        ]
        if a.backbone_weights:
            cmd += ["--backbone-weights", str(a.backbone_weights)]
        try:
            self.stack.run_python(cmd, timeout_s=900)
            self.report["training"] = json.loads(out.read_text())
        except Exception as exc:  # noqa: BLE001 - the serving figures stand on their own
            self.report["training"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}


def _run_ms(item: load.Item) -> float | None:
    started, finished = (
        parse_time(item.server.get("started_at")),
        parse_time(item.server.get("finished_at")),
    )
    return None if started is None or finished is None else (finished - started) * 1000


def _busy_ms(done: list[load.Item]) -> float:
    """How long the pool processes were busy: per micro-batch (its members share their claim
    time, started_at), from the claim to its last member finished; summed over the batches.
    Summing every member's own run time would count a batch of 8 about 8 times over."""
    batches: dict[str, float] = {}
    for item in done:
        run_ms = _run_ms(item)
        if run_ms is not None:
            started = item.server["started_at"]
            batches[started] = max(batches.get(started, 0.0), run_ms)
    return sum(batches.values())


def rss_report(
    sampler: monitor.RssSampler, start: monitor.RssSample, warm: monitor.RssSample
) -> dict:
    key = "pool_children_rss_mb"
    final = sampler.sample()
    at_100 = sampler.first_at_or_after(100)
    out: dict = {
        "start": start.memory[key],
        "after_warmup": warm.memory[key],
        "after_100": at_100.memory[key] if at_100 else None,
        "after_n": final.memory[key],
        "n": final.done,
        "max": max(s.memory[key] for s in sampler.samples),
        "pool_children_uss_mb_after_n": final.memory["pool_children_uss_mb"],
        "worker_pss_mb_after_n": final.memory["worker_pss_mb"],
        "main_processes_mb": final.memory["main_rss_mb"],
        "pool_children_threads": final.memory["pool_children_threads"],
    }
    if at_100 and at_100.memory[key]:
        out["growth_100_to_n_pct"] = round(
            (final.memory[key] - at_100.memory[key]) / at_100.memory[key] * 100, 1
        )
    return out


def meta(
    args: argparse.Namespace, stack: Stack, images: int, report: dict, devices: list[str]
) -> dict:
    floor = report.get("floor", {})
    return {
        "architecture": args.arch,
        "classes": args.classes.split(","),
        "backbone_weights": str(args.backbone_weights) if args.backbone_weights else None,
        "model_version": stack.model_version,
        "device_workers": devices,
        "device_floor": floor.get("device"),
        "model_execution_floor": floor.get("execution"),
        "model_execution_workers": report.pop("_model_execution_workers", None),
        "cuda_device": floor.get("cuda_device"),
        "torch": floor.get("torch"),
        "torch_threads_per_worker": floor.get("torch_threads"),
        "celery_concurrency": args.concurrency,
        "celery_worker_processes": args.workers,
        "gunicorn_workers": args.web_workers,
        "gunicorn_threads": args.web_threads,
        "torch_threads_setting": args.torch_threads or "app default",
        "batch_size_setting": args.batch_size or "app default (by device)",
        "database_url_options": args.db_url_query or None,
        "image_count": images,
        "image_source": str(args.images),
        "uploads_total": None,
        "cpu_count": os.cpu_count(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **git_commit(),
    }


def checks(report: dict) -> dict:
    """The issue's targets, computed (informative; the benchmark never fails on them)."""
    out: dict = {}
    if report.get("ratio") is not None:
        out["ratio_ge_0.8"] = report["ratio"] >= 0.8
    up = report.get("upload_ms", {})
    levels = sorted(up, key=lambda k: int(k[1:]))
    if len(levels) > 1 and up[levels[0]].get("p50"):
        out[f"upload_p95_{levels[-1]}_over_p50_{levels[0]}"] = round(
            up[levels[-1]]["p95"] / up[levels[0]]["p50"], 1
        )
        queueing = upload_queueing(report, up, levels[0], levels[-1])
        if queueing:
            out[f"upload_{levels[-1]}_queueing"] = queueing
    growth = report.get("worker_rss_mb", {}).get("growth_100_to_n_pct")
    if growth is not None:
        out["rss_growth_within_10pct"] = abs(growth) <= 10
    return out


def upload_queueing(report: dict, up: dict, low: str, top: str) -> dict:
    """Why upload p95 at the top level is a multiple of p50 at one client: queueing, in figures.

    The clients are a closed loop (each sends its next upload as soon as the last is answered),
    so by Little's law their mean latency is clients / uploads per second: the time spent
    waiting for the cores, whatever the server. The least it can be is the request path's own
    CPU per upload (gunicorn + PostgreSQL, measured with the workers paused) times the clients,
    spread over every core; divided by the same p50 at one client as the headline multiple, the
    least multiple any server with that CPU cost could show on this machine even if the workers
    took no CPU. `up` is the report's upload_ms; an empty dict when the run lacks a figure.
    """
    loaded, p50_low = up[top], up[low]["p50"]
    paused = report.get("upload_ms_workers_paused", {}).get(top, {})
    cores = report.get("meta", {}).get("cpu_count") or os.cpu_count() or 1
    clients = int(top[1:])
    parts = [paused.get("gunicorn_cpu_ms_per_upload"), paused.get("postgres_cpu_ms_per_upload")]
    if not (loaded.get("uploads_per_s") and loaded.get("mean")) or None in parts:
        return {}
    cpu_ms = sum(parts)
    least_ms = clients * cpu_ms / cores
    return {
        "littles_law_mean_ms": round(clients * 1000 / loaded["uploads_per_s"], 1),
        "observed_mean_ms": loaded["mean"],
        "request_path_cpu_ms_per_upload": round(cpu_ms, 1),
        "least_mean_ms_on_these_cores": round(least_ms, 1),
        f"least_multiple_of_p50_{low}": round(least_ms / p50_low, 1),
    }


def _terminate(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    files = load.find_images(args.images, args.seed)
    source = load.ImageSource(files)
    cfg = StackConfig(
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
        db_url_query=args.db_url_query,
        log_level=args.log_level,
        keep=args.keep,
        seed=args.seed,
    )
    stack = Stack(cfg)
    sampler: monitor.RssSampler | None = None
    counter = None
    report: dict = {}
    devices: list[str] = []
    bench: Bench | None = None
    started = time.monotonic()
    report["_machine"] = monitor.wait_quiet(args.wait_quiet)
    try:
        log.info("starting the app (%d worker(s)) in %s", args.workers, stack.tmp)
        stack.start()
        client = ApiClient("127.0.0.1", stack.port, stack.token)
        client.wait_until_up(60)
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
    report = finish(report, args, stack, len(files), source, devices, time.monotonic() - started)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if "aborted" in report else 0


def finish(
    report: dict,
    args: argparse.Namespace,
    stack: Stack,
    images: int,
    source: load.ImageSource,
    devices: list[str],
    seconds: float,
) -> dict:
    """Put the headline figures first, then the details."""
    m = meta(args, stack, images, report, devices)
    m["uploads_total"] = source.handed_out
    m["images_reused"] = source.wrapped
    m["run_seconds"] = round(seconds, 1)
    m["machine_before_start"] = report.pop("_machine", None)
    other = report.get("sustained", {}).get("cpu", {}).get("share_of_cores", {}).get("other")
    m["other_processes_cpu_share_during_sustained"] = other
    if other is not None and other > 0.1:
        m["warning"] = (
            f"other processes used {other:.0%} of the cores during the sustained "
            "phase: the figures are skewed by them"
        )
    head = [
        "upload_ms",
        "upload_ms_workers_paused",
        "end_to_end_ms",
        "throughput_per_s",
        "throughput_server_per_s",
        "floor_per_s",
        "ratio",
        "ratio_cpu",
        "plain_script_floor_per_s",
        "ratio_vs_plain_script",
        "worker_rss_mb",
        "training",
    ]
    ordered = {"meta": m, "checks": checks(report)}
    ordered.update({k: report[k] for k in head if k in report})
    ordered.update({k: v for k, v in report.items() if k not in ordered})
    return ordered


if __name__ == "__main__":
    sys.exit(main())
