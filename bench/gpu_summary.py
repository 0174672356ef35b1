"""The GPU run's key figures in a few lines (bench/gpu.sh prints them and writes summary.md):
training images/s per strategy, the app's loop beside the plain one; predictions/s from the
server's timestamps; the compute and batch floors; upload p95 at the top client level; the
workers' memory (their whole process trees); and how long each stage of the run took.

    python bench/gpu_summary.py OUT_DIR         (reads train.json, trainbench.json, bench.json,
                                                 stages.txt there; writes OUT_DIR/summary.md)

Any file or figure that is missing shows as "n/a", so a run that stopped half way still gets
the part it measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

STRATEGIES = ("head", "partial", "full")


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _fmt(value: Any, unit: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    if isinstance(value, int) or abs(value) >= 1000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:,.1f}"
    return f"{text}{unit}"


def _steady_and_first(epochs: list[dict]) -> tuple[Any, Any]:
    """images/s of the epochs after the first (their mean) and of the first, from train.json."""
    rates = [e.get("images_per_s") for e in epochs or [] if e.get("images_per_s") is not None]
    if not rates:
        return None, None
    later = rates[1:]
    return (sum(later) / len(later) if later else None), rates[0]


def training_lines(train: dict, bench: dict) -> list[str]:
    rows = [
        "| strategy | manage.py train img/s steady / first epoch (wall s) "
        "| bench.ml app loop steady / first | plain torchvision loop | app / plain |",
        "| --- | --- | --- | --- | --- |",
    ]
    for strategy in STRATEGIES:
        run = train.get(strategy, {})
        if not run and not _get(bench, "app_images_per_s", strategy):
            continue
        steady, first = _steady_and_first(run.get("epochs", []))
        app = _get(bench, "app_images_per_s", strategy)
        app_first = _get(bench, "app_first_epoch_images_per_s", strategy)
        plain = _get(bench, "plain_torchvision_images_per_s", strategy)
        ratio = app / plain if isinstance(app, int | float) and plain else None
        status = "" if run.get("status") in (None, "done") else f" [{run.get('status')}]"
        rows.append(
            f"| {strategy}{status} | {_fmt(steady)} / {_fmt(first)} ({_fmt(run.get('wall_s'))})"
            f" | {_fmt(app)} / {_fmt(app_first)} | {_fmt(plain)} | {_fmt(ratio, 'x')} |"
        )
    return rows


def _top_level(levels: dict) -> str | None:
    keys = [k for k in levels if k.startswith("c") and k[1:].isdigit()]
    return max(keys, key=lambda k: int(k[1:])) if keys else None


def serving_lines(bench: dict) -> list[str]:
    floor = bench.get("floor", {})
    batched = floor.get("batch_floor_per_s") or {}
    best_batch = max(batched.items(), key=lambda kv: kv[1]) if batched else None
    top = _top_level(bench.get("upload_ms", {}))
    async_load = bench.get("async_load", {})
    memory = bench.get("worker_rss_mb", {})
    tree = memory.get("worker_tree", {})
    lines = [
        f"- predictions/s, server timestamps: sustained {_fmt(bench.get('throughput_server_per_s'))}"
        f" (client side {_fmt(bench.get('throughput_per_s'))}); open loop "
        f"{_fmt(_get(async_load, 'completion', 'throughput_per_s'))} at "
        f"{_fmt(async_load.get('offered_rate_per_s'))}/s offered "
        f"({_fmt(_get(async_load, 'uploads', 'accepted_per_s'))}/s accepted)",
        f"- floor: {_fmt(bench.get('floor_per_s'))}/s one image at a time; batch floor "
        + (f"{_fmt(best_batch[1])}/s ({best_batch[0]})" if best_batch else "n/a")
        + f"; ratio {_fmt(bench.get('ratio'))}, to the batch floor "
        + _fmt(_get(bench, "ratio_to_batch_floor", "ratio"))
        + f"; model server {_get(bench, 'meta', 'model_server_setting') or 'n/a'}",
        f"- upload p95 at {top or 'n/a'}: "
        + (_fmt(_get(bench, "upload_ms", top, "p95"), " ms") if top else "n/a")
        + (f" (p50 {_fmt(_get(bench, 'upload_ms', top, 'p50'), ' ms')})" if top else ""),
        f"- worker memory, whole process tree: RSS {_fmt(tree.get('rss_mb_after_n'), ' MB')}, "
        f"PSS {_fmt(tree.get('pss_mb_after_n', memory.get('worker_pss_mb_after_n')), ' MB')} "
        f"({_fmt(tree.get('processes'))} processes; pool children RSS "
        f"{_fmt(memory.get('after_n'), ' MB')}, other children RSS "
        f"{_fmt(tree.get('other_children_rss_mb_after_n'), ' MB')})",
    ]
    if bench.get("aborted"):
        lines.append(f"- the benchmark stopped early: {bench['aborted'].splitlines()[0][:300]}")
    return lines


def stage_lines(stages: list[tuple[str, float]]) -> list[str]:
    """Each stage's duration: the time from its start to the next one's (the last: "end")."""
    if len(stages) < 2:
        return []
    parts = [f"{name} {stages[i + 1][1] - at:.0f} s" for i, (name, at) in enumerate(stages[:-1])]
    return [f"- stages: {'; '.join(parts)}; total {stages[-1][1] - stages[0][1]:.0f} s"]


def read_stages(path: Path) -> list[tuple[str, float]]:
    """stages.txt: one `NAME SECONDS_SINCE_START` line per stage, as gpu.sh writes them."""
    out = []
    try:
        for line in path.read_text().splitlines():
            name, _, seconds = line.rpartition(" ")
            out.append((name, float(seconds)))
    except (OSError, ValueError):
        pass
    return out


def summarize(out_dir: Path) -> str:
    train = _load(out_dir / "train.json")
    trainbench = _load(out_dir / "trainbench.json")
    bench = _load(out_dir / "bench.json")
    meta = bench.get("meta", {})
    device = trainbench.get("device") or meta.get("cuda_device") or meta.get("device_floor")
    lines = [
        "# GPU run: key figures",
        "",
        f"- device {device or 'n/a'}, torch {trainbench.get('torch') or meta.get('torch') or 'n/a'}"
        f", commit {(meta.get('commit') or 'n/a')[:10]}, {meta.get('cpu_count') or 'n/a'} cores, "
        f"batch {trainbench.get('batch_size') or 'n/a'}",
        "",
        *training_lines(train, trainbench),
        "",
        *serving_lines(bench),
        *stage_lines(read_stages(out_dir / "stages.txt")),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    text = summarize(out_dir)
    (out_dir / "summary.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
