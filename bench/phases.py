"""The phases of one benchmark run (bench/run.py), in order; each adds its figures to a report.

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import time

from bench import load, monitor, pyspy
from bench.client import ApiClient, parse_time
from bench.stack import Stack
from bench.stats import rate, summary


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
        child, _ = monitor.worker_tree(self.stack.workers[0].pid)
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

    def async_load(self) -> None:
        """Uploads offered at --async-rate for --async-seconds by asyncio clients, completion
        from the server's bulk status (bench/async_load.py)."""
        import asyncio

        from bench import async_load

        a = self.args
        self.report["async_load"] = asyncio.run(
            async_load.run(
                f"http://127.0.0.1:{self.stack.port}",
                self.stack.token,
                self.source,
                rate=a.async_rate,
                seconds=a.async_seconds,
                timeout_s=a.phase_timeout,
            )
        )

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
            _busy_ms(done) / 1000 / (span * a.workers * a.concurrency), 3
        )
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
        batches = floor.get("batch_floor_per_s") or {}
        if tput and batches:
            # Against the best batched pass (the model server's batches on a GPU).
            size, best = max(batches.items(), key=lambda kv: kv[1])
            self.report["ratio_to_batch_floor"] = {"batch": size, "ratio": round(tput / best, 3)}
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
        if not (self.stack.cfg.repo / "training" / "ml" / "train" / "loop.py").exists():
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
