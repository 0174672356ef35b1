"""The report of one benchmark run (bench/run.py): memory, meta, the issue's checks, and the
order of the JSON keys, headline figures first.

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
from pathlib import Path

from bench import load, monitor
from bench.stack import Stack


def git_commit(repo: Path) -> dict:
    """The checkout's commit; outside a git checkout (a `git archive` copy), a REVISION file."""

    def git(*a: str) -> str:
        done = subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        if commit:
            return {"commit": commit, "dirty_files": len(git("status", "--porcelain").splitlines())}
    except (OSError, subprocess.SubprocessError):
        pass
    revision = repo / "REVISION"
    return {"commit": revision.read_text().strip() if revision.exists() else None}


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
        # The workers' whole process trees: mains, pool children and whatever else they
        # started (other_children: a model server spawned by the main process, say).
        "worker_tree": {
            "rss_mb_after_n": final.memory["tree_rss_mb"],
            "pss_mb_after_n": final.memory["tree_pss_mb"],
            "uss_mb_after_n": final.memory["tree_uss_mb"],
            "rss_mb_max": max(s.memory.get("tree_rss_mb", 0.0) for s in sampler.samples),
            "other_children_rss_mb_after_n": final.memory["other_children_rss_mb"],
            "processes": final.memory["tree_processes"],
            "other_children": final.memory["other_children"],
        },
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
        "model_server_setting": args.model_server,
        "database_url_options": args.db_url_query or None,
        "image_count": images,
        "image_source": str(args.images),
        "uploads_total": None,
        "cpu_count": os.cpu_count(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **git_commit(stack.cfg.repo),
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
