"""Worker processes keep the production model and the one before it, and load each once."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import CLASSES


@pytest.fixture
def versions(db, state_dict_file, settings):
    from training.services import model_version_import

    settings.CXR_INFERENCE_FREEZE = False  # the cache is under test, not the frozen graph
    path = state_dict_file("mobilenet_v2")
    return [
        model_version_import(
            path=path, architecture="mobilenet_v2", classes=CLASSES, name=f"cache-{i}"
        )
        for i in range(3)
    ]


def test_two_versions_stay_loaded_and_a_third_replaces_the_least_recently_used(versions):
    from diagnosis.worker import compute

    a, b, c = versions
    first_a = compute.predictor_for(a)
    compute.predictor_for(b)
    assert compute.predictor_for(a) is first_a  # held, and now the most recently used
    compute.predictor_for(c)
    assert compute.is_loaded(a.pk, a.sha256) and compute.is_loaded(c.pk, c.sha256)
    assert not compute.is_loaded(b.pk, b.sha256)


def test_threads_that_want_the_same_version_share_one_load(versions, monkeypatch):
    from diagnosis.worker import compute

    loads = []
    real_load = compute._load
    started = threading.Event()

    def counted_load(version):
        loads.append(version.pk)
        started.set()
        return real_load(version)

    monkeypatch.setattr(compute, "_load", counted_load)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(compute.predictor_for(versions[0])))
        for _ in range(3)
    ]
    threads[0].start()
    started.wait(30)  # the others ask while the first one loads
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(60)
    assert loads == [versions[0].pk]
    assert len(results) == 3 and all(r is results[0] for r in results)


def test_a_newly_promoted_version_is_loaded_ahead_beside_the_previous_one(
    transactional_db, state_dict_file, settings, caplog
):
    """What each inference pool process's background thread does every CXR_WORKER_WARM_POLL_S."""
    from diagnosis.worker import compute, process
    from training.services import model_version_import, model_version_promote

    settings.CXR_INFERENCE_FREEZE = False
    path = state_dict_file("mobilenet_v2")
    old, new = (
        model_version_import(path=path, architecture="mobilenet_v2", classes=CLASSES, name=name)
        for name in ("ahead-old", "ahead-new")
    )
    model_version_promote(override_reason="test weights", version=old, reason="test")

    def poll(first: bool) -> None:  # in its own thread, with its own database connection
        thread = threading.Thread(target=process._load_production_model, kwargs={"first": first})
        thread.start()
        thread.join(120)

    poll(first=True)
    assert compute.is_loaded(old.pk, old.sha256)
    model_version_promote(override_reason="test weights", version=new, reason="test")
    caplog.clear()
    with caplog.at_level("INFO", logger="diagnosis.worker.process"):
        poll(first=False)
        poll(first=False)  # already held: nothing loaded again
    assert compute.is_loaded(new.pk, new.sha256) and compute.is_loaded(old.pk, old.sha256)
    assert [r.getMessage() for r in caplog.records if "loaded ahead" in r.getMessage()] == [
        "production model ahead-new loaded ahead of the first prediction since its promotion"
    ]


def test_a_version_that_cannot_be_loaded_is_reported_once_not_every_poll(
    transactional_db, state_dict_file, settings, caplog, monkeypatch
):
    import os

    from diagnosis.worker import compute, process
    from training.services import model_version_import, model_version_promote

    monkeypatch.setattr(process, "_not_loadable", None)
    version = model_version_import(
        path=state_dict_file("mobilenet_v2"),
        architecture="mobilenet_v2",
        classes=CLASSES,
        name="gone",
    )
    model_version_promote(override_reason="test weights", version=version, reason="test")
    os.remove(version.weights.path)
    caplog.clear()
    with caplog.at_level("WARNING", logger="diagnosis.worker.process"):
        for _ in range(3):
            thread = threading.Thread(
                target=process._load_production_model, kwargs={"first": False}
            )
            thread.start()
            thread.join(60)
    warnings = [r for r in caplog.records if "could not load the production model" in r.message]
    assert len(warnings) == 1
    assert "weights file of model version gone is missing" in str(warnings[0].exc_info[1])
    assert not compute.is_loaded(version.pk, version.sha256)
