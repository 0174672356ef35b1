"""training.signals: what a promotion and a changed result rule tell diagnosis, inside the
sender's transaction."""

from __future__ import annotations

import pytest

from training import signals
from training.models import ModelVersion
from training.services import model_version_promote


class ReceiverFailed(Exception):
    pass


@pytest.fixture
def candidate(db) -> ModelVersion:
    return ModelVersion.objects.create(
        name="cand-v1",
        architecture="mobilenet_v2",
        class_labels=["NORMAL", "PNEUMONIA"],
        weights="models/cand-v1.pt",
        sha256="0" * 64,
    )


def test_a_receiver_that_fails_rolls_the_promotion_back(candidate):
    def fail(sender, *, version, **kwargs):
        raise ReceiverFailed(version.name)

    signals.model_version_promoted.connect(fail, dispatch_uid="test-fail")
    try:
        with pytest.raises(ReceiverFailed):
            model_version_promote(override_reason="test weights", version=candidate, reason="test")
    finally:
        signals.model_version_promoted.disconnect(dispatch_uid="test-fail")
    candidate.refresh_from_db()
    assert candidate.status != ModelVersion.Status.PRODUCTION
    assert not candidate.promotions.exists()


def test_the_counts_of_every_receiver_are_added_up(candidate):
    def three(sender, *, version, **kwargs):
        return 3

    signals.model_version_rule_changed.connect(three, dispatch_uid="test-three")
    try:
        # diagnosis's own receiver finds no study with a prediction of this version: 0.
        assert signals.send_and_count(signals.model_version_rule_changed, version=candidate) == 3
    finally:
        signals.model_version_rule_changed.disconnect(dispatch_uid="test-three")
