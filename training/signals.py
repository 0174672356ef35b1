"""What the training app tells the apps that use its models: a version went into production, and
a version's result rule changed.

Signals, so that training never imports the apps that act on them: diagnosis connects its
receivers in DiagnosisConfig.ready(). They are sent with `send`, not `send_robust`: receivers run
synchronously, inside the sender's transaction, and an exception in one rolls the change back.
"""

from __future__ import annotations

from typing import cast

from django.dispatch import Signal

model_version_promoted = Signal()
"""Sent inside model_version_promote's transaction with `version`, now in production (a roll
back promotes an earlier version). A receiver returns how many waiting predictions it queued."""

open_studies_rerun_requested = Signal()
"""Sent inside the same transaction when the promotion asks for it, with `version`: re-analyse
every open (unsigned) study with it. The receiver returns the outcome, whose `as_detail(version)`
goes into the audit event."""

model_version_rule_changed = Signal()
"""Sent after `version`'s normal classes or thresholds changed in the admin. A receiver returns
how many studies' results it stored again."""


def send_and_count(signal: Signal, *, version) -> int:
    """Send `signal` for `version` and add up the counts its receivers return."""
    total = 0
    for _, count in signal.send(sender=type(version), version=version):
        total += cast(int, count)  # the receivers return counts (django-stubs types them str)
    return total


calibration_readings_requested = Signal()
"""Sent by a readings calibration with `version` and `studies` (N): the receiver returns, for the
signed readings of the last N studies read against `version`, one dict per image:
``{"path": the display file's storage name, "label": the final label, "probabilities": the stored
prediction's, "finished_at": when it was made}``. Reads only."""
