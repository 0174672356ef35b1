"""Diagnosis's answers to the training app's signals (training.signals), connected in
DiagnosisConfig.ready(). They run inside the sender's transaction."""

from __future__ import annotations

from diagnosis.selectors import readings_for_calibration as calibration_rows
from diagnosis.services import (
    predictions_assign_waiting,
    studies_reanalyse_open,
    studies_restore_for_version,
)


def assign_waiting_predictions(sender, *, version, **kwargs) -> int:
    return predictions_assign_waiting(version=version)


def reanalyse_open_studies(sender, *, version, **kwargs):
    return studies_reanalyse_open(version=version)


def restore_study_results(sender, *, version, **kwargs) -> int:
    return studies_restore_for_version(version=version)


def readings_for_calibration(sender, *, version, studies: int, **kwargs) -> list[dict]:
    return calibration_rows(version=version, studies=studies)
