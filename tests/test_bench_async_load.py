"""bench/async_load.py: open-loop uploads to a live app and a real worker, completion from the
server's bulk status (issue #24 item 3)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench import async_load
from bench.load import ImageSource
from tests import imagegen

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_it_offers_uploads_and_reads_completion_from_the_server(
    live_server, api_token, production_model, celery_worker, tmp_path
):
    for i in range(3):
        (tmp_path / f"cxr{i}.png").write_bytes(imagegen.png_bytes(seed=i))
    source = ImageSource(sorted(tmp_path.glob("*.png")))

    # In a thread of its own: the browser tests' Playwright keeps an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        report = pool.submit(
            asyncio.run,
            async_load.run(
                live_server.url, api_token, source, rate=4.0, seconds=1.0, poll_s=0.2, timeout_s=120
            ),
        ).result()

    uploads, completion = report["uploads"], report["completion"]
    assert uploads["offered"] == uploads["sent"] == uploads["accepted"] == 4
    assert uploads["errors"] == uploads["refused"] == uploads["shed_by_client"] == 0
    assert completion["done"] == 4 and completion["not_finished"] == 0
    assert completion["throughput_per_s"] > 0 and completion["client_throughput_per_s"] > 0
    assert completion["end_to_end_ms"]["n"] == 4 and report["polls"] >= 1


def test_completion_figures_come_from_the_server_timestamps():
    states = {
        1: {
            "status": "done",
            "queued_at": "2026-01-01T00:00:00Z",
            "started_at": "2026-01-01T00:00:01Z",
            "finished_at": "2026-01-01T00:00:02Z",
            "compute_ms": 50.0,
        },
        2: {
            "status": "done",
            "queued_at": "2026-01-01T00:00:01Z",
            "started_at": "2026-01-01T00:00:02Z",
            "finished_at": "2026-01-01T00:00:04Z",
            "compute_ms": 70.0,
        },
        3: {
            "status": "failed",
            "queued_at": "2026-01-01T00:00:01Z",
            "started_at": None,
            "finished_at": "2026-01-01T00:00:03Z",
            "compute_ms": None,
        },
    }
    figures = async_load._completion(states, [1, 2, 3, 4], first_sent=0.0, seen_all=None)
    assert figures["done"] == 2 and figures["failed"] == 1 and figures["not_finished"] == 1
    assert figures["server_span_s"] == 4.0 and figures["throughput_per_s"] == 0.5
    assert figures["end_to_end_ms"]["p50"] == 2500.0 and figures["queue_wait_ms"]["max"] == 1000.0
    assert figures["client_throughput_per_s"] is None
