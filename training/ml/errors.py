"""The ML core's error base class, in a module that imports nothing heavy."""

from __future__ import annotations


class MLError(Exception):
    """Base class of every error the ML core raises on purpose."""
