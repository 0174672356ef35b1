"""Memory and CPU of the app's processes while the benchmark runs (psutil)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psutil

MB = 1024 * 1024
T = TypeVar("T")


def _safe(fn: Callable[[], T], default: T | float = 0.0) -> T | float:
    try:
        return fn()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return default


def pool_children(pid: int) -> list[psutil.Process]:
    """Every descendant of a Celery worker's main process (its prefork pool, and any process
    the main process or a pool child starts)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _is_fork_of(child: psutil.Process, main: psutil.Process) -> bool:
    """A prefork pool child is a fork of the main process that never exec'd: same command line.
    A process the worker starts with exec (a model server, say) has a command line of its own.
    (With setproctitle installed, Celery names its pool children "...ForkPoolWorker-N".)"""
    cmdline = _safe(child.cmdline, None)
    return cmdline == _safe(main.cmdline, None) or "PoolWorker" in " ".join(cmdline or [])


def worker_tree(pid: int) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The worker's pool children (forks of the main process, with their own descendants) and
    its other descendants (whatever the main process started with exec, and their children)."""
    try:
        main = psutil.Process(pid)
        direct = main.children()
    except psutil.NoSuchProcess:
        return [], []
    pool: list[psutil.Process] = []
    other: list[psutil.Process] = []
    for child in direct:
        subtree = [child, *_safe(lambda c=child: c.children(recursive=True), [])]
        (pool if _is_fork_of(child, main) else other).extend(subtree)
    return pool, other


def _mb(infos: list, attr: str) -> float | None:
    """Sum of a memory_full_info field in MB; None where the platform lacks it (PSS: Linux)."""
    if any(not hasattr(i, attr) for i in infos):
        return None
    return round(sum(getattr(i, attr) for i in infos) / MB, 1)


def worker_memory(pids: list[int]) -> dict[str, float | int | None]:
    """Memory (MB) of the Celery workers' whole process trees, summed over the workers: the
    main processes, their prefork pool children and any other process they started (a model
    server the main process spawns, say), with each part on its own; and the children's thread
    count (torch's intra-op threads show up here). Each process's memory map is read once per
    sample (``memory_full_info`` walks /proc/PID/smaps)."""
    mains: list[psutil.Process] = []
    children: list[psutil.Process] = []
    others: list[psutil.Process] = []
    for pid in pids:
        try:
            mains.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
        pool, other = worker_tree(pid)
        children += pool
        others += other
    child_info = [i for c in children if (i := _safe(c.memory_full_info, None)) is not None]
    other_info = [i for c in others if (i := _safe(c.memory_full_info, None)) is not None]
    main_info = [i for p in mains if (i := _safe(p.memory_full_info, None)) is not None]
    every = [*main_info, *child_info, *other_info]
    return {
        "pool_children_uss_mb": _mb(child_info, "uss") or 0.0,
        "pool_children_rss_mb": _mb(child_info, "rss") or 0.0,
        "main_rss_mb": _mb(main_info, "rss") or 0.0,
        "other_children_rss_mb": _mb(other_info, "rss") or 0.0,
        # The whole trees. RSS counts the pages the processes share (the ML libraries a main
        # process imports before forking its pool) once per process; the proportional set
        # size counts them once in all: the memory the workers really hold.
        "tree_rss_mb": _mb(every, "rss") or 0.0,
        "tree_pss_mb": _mb(every, "pss"),
        "tree_uss_mb": _mb(every, "uss"),
        "worker_pss_mb": _mb(every, "pss"),  # the earlier name of tree_pss_mb
        "tree_processes": len(every),
        "pool_children": len(children),
        "other_children": len(others),
        "pool_children_threads": int(sum(_safe(lambda c=c: c.num_threads()) for c in children)),
    }


@dataclass
class RssSample:
    t: float
    done: int
    memory: dict[str, float | int]


@dataclass
class RssSampler:
    """Samples the workers' memory and the number of finished predictions every `interval_s`."""

    worker_pids: list[int]
    done_count: Callable[[], int]
    interval_s: float = 1.0
    samples: list[RssSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> RssSample:
        s = RssSample(time.monotonic(), self.done_count(), worker_memory(self.worker_pids))
        self.samples.append(s)
        return s

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a missed sample is not worth a crash
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def first_at_or_after(self, done: int) -> RssSample | None:
        return next((s for s in self.samples if s.done >= done), None)


def _cpu(p: psutil.Process) -> float:
    """User+system CPU seconds of a process plus those of its exited, reaped children."""
    times = p.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process tree, children that already exited included."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    return sum(_safe(lambda p=p: _cpu(p)) for p in procs)


def _named_cpu(names: tuple[str, ...]) -> float:
    """CPU seconds of the processes with these names (PostgreSQL: one backend per connection,
    which exits with it: its time is counted through the postmaster's reaped children)."""
    total = 0.0
    for p in psutil.process_iter(["name"]):
        if (p.info.get("name") or "").startswith(names):
            total += _safe(lambda p=p: _cpu(p))
    return total


def cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far per component: each named group of process trees, PostgreSQL, Redis,
    this driver (its HTTP client threads), and the whole machine."""
    snap = {name: sum(_tree_cpu(pid) for pid in pids) for name, pids in groups.items()}
    # Part of a group already counted (`of_which_*`, left out of `other`): the Celery workers'
    # main processes alone (consuming, dispatching to the pool, acks), without their pools.
    if "celery_workers" in groups:
        snap["of_which_celery_main"] = sum(
            _safe(lambda pid=pid: sum(psutil.Process(pid).cpu_times()[:2]))
            for pid in groups["celery_workers"]
        )
    snap["postgres"] = _named_cpu(("postgres",))
    snap["redis"] = _named_cpu(("redis-server",))
    snap["bench_driver"] = sum(psutil.Process().cpu_times()[:2])
    times = psutil.cpu_times()
    snap["machine_busy"] = times.user + times.system + getattr(times, "nice", 0.0)
    return snap


def cpu_delta(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict:
    """CPU seconds per component between two snapshots, and as a share of all cores' time."""
    cores = psutil.cpu_count() or 1
    seconds = {k: round(after[k] - before.get(k, 0.0), 2) for k in after}
    known = sum(
        v for k, v in seconds.items() if k != "machine_busy" and not k.startswith("of_which_")
    )
    seconds["other"] = round(max(0.0, seconds["machine_busy"] - known), 2)
    capacity = wall_s * cores
    return {
        "wall_s": round(wall_s, 2),
        "cores": cores,
        "cpu_s": seconds,
        "share_of_cores": {k: round(v / capacity, 3) for k, v in seconds.items()}
        if capacity
        else {},
    }


def machine_load(seconds: float = 3.0) -> dict:
    """How busy the machine is before we start (other people's jobs skew every figure)."""
    return {
        "cpu_percent": psutil.cpu_percent(interval=seconds),
        "loadavg_1m": round(psutil.getloadavg()[0], 2),
    }


def wait_quiet(max_wait_s: float, threshold_percent: float = 25.0) -> dict:
    """Wait (at most max_wait_s) until the machine's CPU use over 3 s is below the threshold."""
    deadline = time.monotonic() + max_wait_s
    load = machine_load()
    waited = 0.0
    while load["cpu_percent"] > threshold_percent and time.monotonic() < deadline:
        time.sleep(2.0)
        load = machine_load()
        waited = max_wait_s - (deadline - time.monotonic())
    return {**load, "waited_s": round(waited, 1)}


class PgStats:
    """Our database's counters from pg_stat_database (PostgreSQL 14+): sessions opened, time
    spent executing statements, transactions. Unlike CPU, these count only our database."""

    FIELDS = (
        "sessions",
        "active_time",
        "xact_commit",
        "xact_rollback",
        "tup_inserted",
        "tup_updated",
        "tup_fetched",
    )

    def __init__(self, database_url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(database_url, autocommit=True, connect_timeout=10)

    def snapshot(self) -> dict[str, float]:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute(
            f"SELECT {', '.join(self.FIELDS)} FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
        return {k: float(v or 0) for k, v in zip(self.FIELDS, row or (), strict=False)}

    def delta(self, before: dict[str, float], per: int) -> dict[str, float]:
        """Counters since `before`, per item (an upload, a prediction); waits 1.1 s first so
        backends have flushed their statistics."""
        time.sleep(1.1)
        after = self.snapshot()
        per = max(1, per)
        return {
            "sessions_per_item": round((after["sessions"] - before["sessions"]) / per, 2),
            "active_ms_per_item": round((after["active_time"] - before["active_time"]) / per, 2),
            "commits_per_item": round((after["xact_commit"] - before["xact_commit"]) / per, 2),
            "rows_fetched_per_item": round((after["tup_fetched"] - before["tup_fetched"]) / per, 1),
        }

    def close(self) -> None:
        self.conn.close()
