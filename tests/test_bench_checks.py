"""bench/report.py's `checks`: the queueing figures behind the upload multiple."""

from __future__ import annotations

import pytest

from bench.report import checks


def _report(**paused_c32) -> dict:
    return {
        "meta": {"cpu_count": 2},
        "upload_ms": {
            "c1": {"p50": 10.0, "p95": 20.0, "mean": 12.0, "uploads_per_s": 80.0},
            "c32": {"p50": 300.0, "p95": 350.0, "mean": 310.0, "uploads_per_s": 100.0},
        },
        "upload_ms_workers_paused": {"c32": paused_c32},
    }


def test_the_upload_multiple_comes_with_littles_law_and_the_least_any_server_could_show():
    out = checks(_report(gunicorn_cpu_ms_per_upload=11.0, postgres_cpu_ms_per_upload=1.5))

    assert out["upload_p95_c32_over_p50_c1"] == 35.0
    q = out["upload_c32_queueing"]
    assert q["littles_law_mean_ms"] == pytest.approx(320.0)  # 32 clients / 100 uploads/s
    assert q["observed_mean_ms"] == 310.0
    assert q["request_path_cpu_ms_per_upload"] == 12.5
    assert q["least_mean_ms_on_these_cores"] == pytest.approx(200.0)  # 32 x 12.5 ms / 2 cores
    assert q["least_multiple_of_p50_c1"] == pytest.approx(20.0)


def test_a_run_without_the_paused_phase_cpu_figures_has_no_queueing_entry():
    out = checks(_report())

    assert out["upload_p95_c32_over_p50_c1"] == 35.0
    assert "upload_c32_queueing" not in out
