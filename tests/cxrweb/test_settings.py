"""Every integer, number and boolean setting is checked as it is read: a bad value stops the
process at import with ImproperlyConfigured naming the variable (cxrweb/settings.py)."""

from __future__ import annotations

import pytest

from tests.conftest import run_python

IMPORT = "import cxrweb.settings as s; print(s.{})"
BASE_ENV = {"SECRET_KEY": "x", "DATABASE_URL": "postgres://u:p@127.0.0.1:5432/unused"}


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch):
    """The defaults are checked too: none of these may come from the caller's environment."""
    for name in (
        "CXR_DB_CONN_MAX_AGE",
        "CXR_TORCH_THREADS",
        "CXR_WORKER_NICE",
        "CXR_HTTPS",
        "CXR_INFERENCE_FREEZE",
        "CXR_RETRY_DELAY_S",
        "CXR_TASK_TIME_LIMIT",
        "CXR_PREDICTION_STALE_AFTER_S",
        "CXR_TARGET_SENSITIVITY",
        "CXR_CALIBRATION_MIN_IMAGES",
        "CXR_PACS_URL",
        "CXR_PACS_AE",
        "CXR_PACS_SEND_ON",
        "DEBUG",
    ):
        monkeypatch.delenv(name, raising=False)


def _settings(attribute: str, **env: str):
    return run_python(IMPORT.format(attribute), env={**BASE_ENV, **env})


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("CXR_DB_CONN_MAX_AGE", "sixty", "CXR_DB_CONN_MAX_AGE must be an integer, got 'sixty'"),
        ("CXR_DB_CONN_MAX_AGE", "-1", "CXR_DB_CONN_MAX_AGE must be 0 or a positive integer"),
        ("CXR_TORCH_THREADS", "2.5", "CXR_TORCH_THREADS must be an integer"),
        ("CXR_TORCH_THREADS", "-2", "CXR_TORCH_THREADS must be 0 or a positive integer"),
        ("CXR_INFERENCE_BATCH_SIZE", "eight", "CXR_INFERENCE_BATCH_SIZE must be an integer"),
        ("CXR_INFERENCE_BATCH_SIZE", "-1", "CXR_INFERENCE_BATCH_SIZE must be 0 or a positive"),
        ("CXR_WORKER_NICE", "-5", "CXR_WORKER_NICE must be 0 or a positive integer"),
        ("CXR_WORKER_NICE", "20", "CXR_WORKER_NICE must be at most 19"),
        ("CXR_WORKER_HEAP_RETAIN_MB", "256MB", "CXR_WORKER_HEAP_RETAIN_MB must be an integer"),
        ("CXR_WORKER_WARM_POLL_S", "-1", "CXR_WORKER_WARM_POLL_S must be 0 or a positive"),
        ("CXR_TASK_TIME_LIMIT", "10m", "CXR_TASK_TIME_LIMIT must be an integer, got '10m'"),
        ("CXR_PREDICTION_STALE_AFTER_S", "0", "CXR_PREDICTION_STALE_AFTER_S must be a positive"),
        ("CXR_RETRY_DELAY_S", "soon", "CXR_RETRY_DELAY_S must be a number, got 'soon'"),
        ("CXR_RETRY_DELAY_S", "-1", "CXR_RETRY_DELAY_S must be a number of 0 or more"),
        ("CXR_MAX_ASPECT_RATIO", "nan", "CXR_MAX_ASPECT_RATIO must be a number of 1 or more"),
        ("CXR_TARGET_SENSITIVITY", "1.2", "CXR_TARGET_SENSITIVITY must be a number of at most 1"),
        ("CXR_TARGET_SENSITIVITY", "0", "CXR_TARGET_SENSITIVITY must be a number of 0.01 or more"),
        ("CXR_CALIBRATION_MIN_IMAGES", "0", "CXR_CALIBRATION_MIN_IMAGES must be a positive"),
        ("CXR_OOD_PERCENTILE", "101", "CXR_OOD_PERCENTILE must be a percentile of 50 to 100"),
        ("CXR_OOD_PERCENTILE", "10", "CXR_OOD_PERCENTILE must be a number of 50 or more"),
        ("DEBUG", "maybe", "DEBUG must be true or false, got 'maybe'"),
        ("CXR_DB_PREPARED_STATEMENTS", "enabled", "CXR_DB_PREPARED_STATEMENTS must be true or"),
        ("CXR_INFERENCE_FREEZE", "2", "CXR_INFERENCE_FREEZE must be true or false"),
        ("CXR_WORKER_PRELOAD_ML", "nope", "CXR_WORKER_PRELOAD_ML must be true or false"),
        ("CXR_WORKER_WARM_MODEL", "t", "CXR_WORKER_WARM_MODEL must be true or false"),
        ("CXR_FAULT_INJECTION", "yes please", "CXR_FAULT_INJECTION must be true or false"),
        ("CXR_HTTPS", "https", "CXR_HTTPS must be true or false"),
        ("CXR_BEHIND_PROXY", "nginx", "CXR_BEHIND_PROXY must be true or false"),
        ("CXR_PACS_AE", "pacs:104", "CXR_PACS_AE must be host:port:AET"),
        ("CXR_PACS_URL", "pacs:8042", "CXR_PACS_URL must be an http(s) DICOMweb base URL"),
        ("CXR_PACS_SEND_ON", "always", "CXR_PACS_SEND_ON must be result, reading or both"),
        ("CXR_PACS_MAX_ATTEMPTS", "0", "CXR_PACS_MAX_ATTEMPTS must be a positive"),
        ("CXR_MODEL_SERVER", "gpu", "CXR_MODEL_SERVER must be one of auto, on, off"),
        ("CXR_MODEL_SERVER_BATCH", "0", "CXR_MODEL_SERVER_BATCH must be a positive"),
        ("CXR_MODEL_SERVER_WAIT_MS", "-1", "CXR_MODEL_SERVER_WAIT_MS must be a number of 0 or"),
    ],
)
def test_it_refuses_a_bad_value_and_names_the_variable(name, bad, message):
    result = _settings("DEBUG", **{name: bad})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


@pytest.mark.parametrize(
    ("attribute", "env", "expected"),
    [
        ("CXR_TORCH_THREADS", {}, "0"),
        ("CXR_TORCH_THREADS", {"CXR_TORCH_THREADS": " 3 "}, "3"),
        ("CXR_WORKER_NICE", {"CXR_WORKER_NICE": "19"}, "19"),
        ("CXR_INFERENCE_FREEZE", {}, "True"),
        ("CXR_INFERENCE_FREEZE", {"CXR_INFERENCE_FREEZE": "off"}, "False"),
        ("CXR_HTTPS", {"CXR_HTTPS": "YES"}, "True"),
        ("CXR_RETRY_DELAY_S", {"CXR_RETRY_DELAY_S": "0.5"}, "0.5"),
        ("CXR_TARGET_SENSITIVITY", {}, "0.9"),
        ("CXR_TARGET_SENSITIVITY", {"CXR_TARGET_SENSITIVITY": "0.95"}, "0.95"),
        ("CXR_CALIBRATION_MIN_IMAGES", {}, "50"),
        ("DATABASES['default']['CONN_MAX_AGE']", {"CXR_DB_CONN_MAX_AGE": "0"}, "0"),
        ("CXR_PACS_SEND_ON", {"CXR_PACS_SEND_ON": " Both "}, "both"),
        ("CXR_PACS_AE", {"CXR_PACS_AE": "pacs.example.org:104:PACS"}, "pacs.example.org:104:PACS"),
        ("CXR_MODEL_SERVER", {}, "auto"),
        ("CXR_MODEL_SERVER", {"CXR_MODEL_SERVER": "OFF"}, "off"),
        ("CXR_MODEL_SERVER_BATCH", {}, "64"),
    ],
)
def test_it_reads_good_values_and_keeps_the_defaults(attribute, env, expected):
    result = _settings(attribute, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_the_stale_prediction_age_follows_the_task_time_limit_unless_set():
    assert (
        _settings("CXR_PREDICTION_STALE_AFTER_S", CXR_TASK_TIME_LIMIT="100").stdout.strip() == "160"
    )
    set_ = _settings("CXR_PREDICTION_STALE_AFTER_S", CXR_PREDICTION_STALE_AFTER_S="42")
    assert set_.stdout.strip() == "42"
