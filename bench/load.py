"""Load generation over the JSON API: uploads under C clients, completion tracking, e2e timing.

Completion is observed by polling GET /api/v1/predictions/<id>/ "head of line": the oldest
outstanding prediction is polled, and the ones behind it only once it is done (the queue is
FIFO), so the benchmark's own polling stays a small load on a small machine: about one GET per
prediction plus one per poll interval, however fast the server answers. An item is complete when
its prediction is done AND its overlay_url answers 200 with a PNG.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.client import ApiClient, ApiError, parse_time
from bench.stats import rate, summary

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".dcm"}


def find_images(root: Path, seed: int) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"No *.jpg/*.png/*.dcm files under {root}.")
    random.Random(seed).shuffle(files)
    return files


class ImageSource:
    """Hands out (path, bytes) from a shuffled list, cycling; thread-safe; files read once."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self._cache: dict[Path, bytes] = {}
        self._cycle: Iterator[Path] = itertools.cycle(files)
        self._lock = threading.Lock()
        self._serial = itertools.count(1)
        self.handed_out = 0

    def next(self) -> tuple[Path, bytes, int]:
        with self._lock:
            path = next(self._cycle)
            self.handed_out += 1
            if path not in self._cache:
                self._cache[path] = path.read_bytes()
            return path, self._cache[path], next(self._serial)

    @property
    def wrapped(self) -> bool:
        """True once an image was uploaded twice (the app then shares its stored files)."""
        return self.handed_out > len(self.files)


@dataclass
class Item:
    """One upload and what became of it."""

    path: Path
    t_start: float  # perf_counter at the POST's start
    wall_start: float  # time.time() at the POST's start (compared with the server's timestamps)
    upload_ms: float = 0.0
    status_code: int = 0
    prediction_id: int | None = None
    t_complete: float | None = None  # perf_counter once done and the heatmap was fetched
    heatmap_ms: float | None = None
    error: str | None = None
    server: dict = field(default_factory=dict)

    @property
    def e2e_ms(self) -> float | None:
        return None if self.t_complete is None else (self.t_complete - self.t_start) * 1000.0


def upload_one(client: ApiClient, source: ImageSource, tag: str) -> Item:
    path, data, serial = source.next()
    item = Item(path=path, t_start=time.perf_counter(), wall_start=time.time())
    try:
        resp, prediction_id = client.upload(path, data, patient_id=f"BENCH-{tag}-{serial:06d}")
        item.upload_ms, item.status_code, item.prediction_id = (
            resp.elapsed_ms,
            resp.status,
            prediction_id,
        )
        if prediction_id is None:
            item.error = f"upload answered {resp.status}: {resp.body[:200]!r}"
    except OSError as exc:
        item.upload_ms = (time.perf_counter() - item.t_start) * 1000.0
        item.error = f"upload: {type(exc).__name__}: {exc}"
    return item


class Tracker:
    """Polls outstanding predictions head-of-line until each is done and its heatmap fetched."""

    def __init__(self, client: ApiClient, window: int, poll_s: float, timeout_s: float) -> None:
        self.client, self.window, self.poll_s, self.timeout_s = client, window, poll_s, timeout_s
        self.pending: list[Item] = []
        self.completed: list[Item] = []
        self.failed: list[Item] = []
        self.polls = 0
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def add(self, item: Item) -> None:
        if item.prediction_id is None:
            with self._lock:
                self.failed.append(item)
            return
        with self._lock:
            self.pending.append(item)

    def close(self) -> None:
        """No more items will be added: run() returns once the pending ones are complete."""
        self._closed.set()

    def _check(self, item: Item) -> bool:
        """Poll one item; True when it left the pending list."""
        data = self.client.prediction(item.prediction_id)  # type: ignore[arg-type]
        self.polls += 1
        status = data["status"]
        if status == "done":
            overlay = self.client.overlay(data["overlay_url"])
            item.t_complete = time.perf_counter()
            item.heatmap_ms = overlay.elapsed_ms
            item.server = {
                k: data.get(k)
                for k in ("queued_at", "started_at", "finished_at", "compute_ms", "device")
            }
            self.completed.append(item)
            return True
        if status == "failed":
            item.error = f"prediction failed: {data.get('error')}"
            self.failed.append(item)
            return True
        return False

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            with self._lock:
                head = self.pending[: self.window]
            if not head:
                if self._closed.is_set():
                    return
                time.sleep(self.poll_s)
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(self.pending)} predictions were not done within {self.timeout_s:.0f} s "
                    f"(oldest: prediction {head[0].prediction_id})"
                )
            progressed = False
            for item in head:
                try:
                    left = self._check(item)
                except (ApiError, OSError) as exc:
                    item.error, left = f"poll: {exc}", True
                    self.failed.append(item)
                if not left:
                    # Head of line: the queue is FIFO, so the ones behind are not done either
                    # (or will be seen as soon as this one is). Polling them too would multiply
                    # the benchmark's own GETs, which compete with the app for the same cores.
                    break
                progressed = True
                with self._lock:
                    self.pending.remove(item)
            if not progressed:
                time.sleep(self.poll_s)


def drain(
    client: ApiClient, items: list[Item], window: int, poll_s: float, timeout_s: float
) -> Tracker:
    tracker = Tracker(client, window, poll_s, timeout_s)
    for item in sorted(items, key=lambda i: i.prediction_id or 0):
        tracker.add(item)
    tracker.close()
    tracker.run()
    return tracker


def _in_pool(threads: int, n: int, fn: Callable[[], Item]) -> list[Item]:
    """fn() n times on `threads` threads; on an error or Ctrl-C, queued calls are cancelled."""
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"client{threads}")
    try:
        futures = [pool.submit(fn) for _ in range(n)]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def upload_level(
    client: ApiClient, source: ImageSource, clients: int, n: int, tag: str
) -> tuple[list[Item], float]:
    """n uploads by `clients` concurrent threads (each POST timed alone); (items, wall seconds)."""
    started = time.perf_counter()
    items = _in_pool(clients, n, lambda: upload_one(client, source, tag))
    return items, time.perf_counter() - started


def upload_stats(items: list[Item], wall_s: float) -> dict:
    ok = [i.upload_ms for i in items if i.prediction_id is not None]
    out = summary(ok)
    out["errors"] = len(items) - len(ok)
    out["uploads_per_s"] = rate(len(ok), wall_s)
    return out


def run_idle(
    client: ApiClient, source: ImageSource, n: int, poll_s: float, timeout_s: float
) -> list[Item]:
    """One study at a time: upload, wait until done, fetch the heatmap, next."""
    done: list[Item] = []
    for _ in range(n):
        item = upload_one(client, source, "idle")
        tracker = Tracker(client, 1, poll_s, timeout_s)
        tracker.add(item)
        tracker.close()
        tracker.run()
        done.append(item)
    return done


def run_burst(
    client: ApiClient,
    source: ImageSource,
    count: int,
    clients: int,
    window: int,
    poll_s: float,
    timeout_s: float,
) -> tuple[Tracker, list[Item], float]:
    """`count` uploads as fast as `clients` threads can send them, tracked to completion while
    they are sent. Returns the tracker, the items, and the seconds from the first POST to the
    last heatmap fetched."""
    tracker = Tracker(client, window, poll_s, timeout_s)
    errors: list[BaseException] = []

    def track() -> None:
        try:
            tracker.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    thread = threading.Thread(target=track, name="tracker", daemon=True)
    thread.start()

    def one() -> Item:
        item = upload_one(client, source, "load")
        tracker.add(item)
        return item

    try:
        items = _in_pool(clients, count, one)
    finally:
        tracker.close()
    thread.join(timeout=timeout_s + 30)
    if errors:
        raise errors[0]
    if thread.is_alive():
        raise TimeoutError("the completion tracker did not finish")
    first = min(i.t_start for i in items)
    last = max((i.t_complete for i in tracker.completed), default=first)
    return tracker, items, last - first


def server_breakdown(items: list[Item]) -> dict:
    """Where an item's time went, from the prediction's own timestamps (same machine's clock)."""
    queue_wait, run, compute, observe_lag = [], [], [], []
    for item in items:
        s = item.server
        queued, started, finished = (
            parse_time(s.get(k)) for k in ("queued_at", "started_at", "finished_at")
        )
        if None in (queued, started, finished) or item.t_complete is None:
            continue
        queue_wait.append((started - queued) * 1000)  # type: ignore[operator]
        run.append((finished - started) * 1000)  # type: ignore[operator]
        if s.get("compute_ms") is not None:
            compute.append(float(s["compute_ms"]))
        # from finished_at to the heatmap in hand: polling lag + GET prediction + GET heatmap
        wall_complete = item.wall_start + (item.t_complete - item.t_start)
        observe_lag.append((wall_complete - finished) * 1000)  # type: ignore[operator]
    return {
        "queue_wait_ms": summary(queue_wait, (50, 95)),
        "worker_run_ms": summary(run, (50, 95)),
        "worker_compute_ms": summary(compute, (50, 95)),
        "worker_run_minus_compute_ms": summary(
            [r - c for r, c in zip(run, compute, strict=False)], (50, 95)
        ),
        "finished_to_heatmap_in_hand_ms": summary(observe_lag, (50, 95)),
    }
