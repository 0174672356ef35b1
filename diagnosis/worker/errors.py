"""Errors of the worker side."""

from __future__ import annotations


class PredictionFailure(Exception):
    """A permanent failure: the prediction is marked failed with this message."""
