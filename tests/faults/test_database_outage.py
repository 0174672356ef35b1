"""PostgreSQL unreachable during an upload: a clear 503 with a JSON error, nothing stored
(no rows, no file left under MEDIA_ROOT); once it is back the next upload works and completes.
"""

from __future__ import annotations

import threading

import pytest

from tests.conftest import wait_for
from tests.faults.client import png

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _assert_503_json(resp) -> None:
    assert resp.status == 503, (resp.status, resp.body[:500])
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert "database" in body["error"].lower() and "unavailable" in body["error"].lower(), body


def _next_upload_works(stack, seed: int, patient_id: str) -> None:
    up = stack.upload(png(seed), filename=f"after-{seed}.png", patient_id=patient_id)
    row = stack.wait_finished([up["prediction_id"]], timeout=90)[up["prediction_id"]]
    assert row["status"] == "done", row
    assert row["attempts"] == 1, row


def test_an_upload_while_the_database_is_down_gets_a_503_and_stores_nothing(stack):
    files_before = stack.media_files()
    stack.pg.stop("fast")
    try:
        resp = stack.api.upload(
            png(300), filename="db-down.png", patient_id="FAULT-DB-1", timeout=60
        )
        _assert_503_json(resp)
        _assert_503_json(stack.api.request("GET", "/api/v1/predictions/1/"))
        assert stack.media_files() == files_before
    finally:
        stack.pg.start()
    assert (
        stack.sql("SELECT count(*) AS n FROM diagnosis_patient WHERE mrn = 'FAULT-DB-1'")[0]["n"]
        == 0
    )
    _next_upload_works(stack, 301, "FAULT-DB-1")


def test_the_database_going_away_in_the_middle_of_an_upload_leaves_no_file_behind(stack):
    """The upload's transaction is held up (a lock on the prediction table) after its files are
    written, then its connection is cut and PostgreSQL stops: the files it wrote must be
    removed, and the answer is 503."""
    import psycopg

    files_before = stack.media_files()
    locker = psycopg.connect(stack.pg.url(), connect_timeout=5)
    result = {}
    try:
        locker.execute("LOCK TABLE diagnosis_prediction IN ACCESS EXCLUSIVE MODE")

        def upload():
            result["resp"] = stack.api.upload(
                png(310, size=128), filename="mid-upload.png", patient_id="FAULT-DB-2", timeout=90
            )

        thread = threading.Thread(target=upload, daemon=True)
        thread.start()
        # The upload's backend, waiting on the lock to insert its prediction.
        blocked_upload = (
            "FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query ILIKE 'INSERT INTO \"diagnosis_prediction\"%%'"
        )

        def upload_blocked():
            return stack.sql(f"SELECT count(*) AS n {blocked_upload}")[0]["n"] >= 1

        wait_for(
            upload_blocked,
            timeout=30,
            interval=0.1,
            what="the upload to wait on the prediction table",
        )
        written = stack.media_files() - files_before
        assert written, "the upload should have written its files before inserting its rows"
        # The upload's own connection is cut first, while the lock still holds it: a fast
        # shutdown alone ends every backend at once, and when the lock holder's went first the
        # upload could commit in between (a 201, rightly) before its own was ended.
        cut = locker.execute(f"SELECT pg_terminate_backend(pid) {blocked_upload}").fetchall()
        assert cut == [(True,)], f"the upload's connection was not cut: {cut}"
        stack.pg.stop("fast")  # then the database goes away altogether
        thread.join(timeout=60)
        assert not thread.is_alive(), "the upload did not answer"
    finally:
        locker.close()
        if stack.pg.running_pid() is None:
            stack.pg.start()
    _assert_503_json(result["resp"])
    leftover = stack.media_files() - files_before
    assert not leftover, f"files left behind by the failed upload: {sorted(leftover)}"
    assert (
        stack.sql("SELECT count(*) AS n FROM diagnosis_patient WHERE mrn = 'FAULT-DB-2'")[0]["n"]
        == 0
    )
    _next_upload_works(stack, 311, "FAULT-DB-2")
