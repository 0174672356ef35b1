"""bench/tasklog.py reads the workers' logs in the format cxrweb.settings.LOGGING writes."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings

from bench import tasklog


def _line(formatter: logging.Formatter, created: float, pid: int, message: str) -> str:
    record = logging.LogRecord("celery.app.trace", logging.INFO, __file__, 1, message, None, None)
    record.created, record.msecs, record.process = created, (created % 1) * 1000, pid
    return formatter.format(record)


def _succeeded(run_s: float, result: str) -> str:
    return f"Task diagnosis.tasks.run_prediction[id] succeeded in {run_s}s: '{result}'"


def test_the_skipped_messages_cost_is_read_per_pool_process_from_the_apps_log_format():
    formatter = logging.Formatter(settings.LOGGING["formatters"]["plain"]["format"])
    t0 = 1_800_000_000.0
    lines = [
        # pool process 11: a batch of 0.2 s, then two skipped messages 10 ms apart (4 ms each)
        _line(formatter, t0 + 0.200, 11, _succeeded(0.2, "done")),
        _line(formatter, t0 + 0.210, 11, _succeeded(0.004, "skipped")),
        _line(formatter, t0 + 0.220, 11, _succeeded(0.004, "skipped")),
        # ... then idle for 5 s (another phase), and one more batch
        _line(formatter, t0 + 5.300, 11, _succeeded(0.1, "done")),
        # pool process 12, and a line of another logger
        _line(formatter, t0 + 0.100, 12, _succeeded(0.1, "done")),
        "2026-12-04 06:10:31,315 10976 INFO celery.worker.strategy: Task x[y] received",
    ]
    timelines = tasklog.task_timelines(lines)
    assert sorted(timelines) == [11, 12]
    assert [t[2] for t in timelines[11]] == ["done", "skipped", "skipped", "done"]

    stretch = tasklog.busiest_stretch(timelines[11], idle_gap_s=0.5)
    cost = tasklog.skipped_cost(stretch)
    assert cost["span_s"] == pytest.approx(0.22, abs=0.005)
    assert cost["tasks_that_ran_predictions"] == 1 and cost["skipped_messages"] == 2
    # each skipped message: 4 ms running plus the 6 ms gap before it
    assert cost["skipped_ms_each"] == pytest.approx(10.0, abs=1.5)
    assert cost["skipped_run_ms_each"] == pytest.approx(4.0, abs=0.5)
    assert cost["skipped_share"] == pytest.approx(0.02 / 0.22, abs=0.01)


def test_a_log_without_process_ids_is_refused_with_a_reason(tmp_path, capsys):
    log = tmp_path / "worker0.log"
    log.write_text(
        "2026-12-04 06:10:32,253 INFO celery.app.trace: Task x[y] succeeded in 0.9s: 'done'\n"
    )
    assert tasklog.main([str(log)]) == 1
    assert "no finished tasks with a process id" in capsys.readouterr().err
