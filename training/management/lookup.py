"""What the training app's management commands share: finding a row by name or id, and printing
a figure."""

from __future__ import annotations

from django.core.management.base import CommandError


def by_name_or_id(model, key: str):
    """The ``model`` row named ``key``, else the one whose id it is; CommandError if neither."""
    obj = model.objects.filter(name=key).first()
    if obj is None and key.isdigit():
        obj = model.objects.filter(pk=int(key)).first()
    if obj is None:
        raise CommandError(f"No {model._meta.verbose_name} {key!r}.")
    return obj


def figure(x: float | None) -> str:
    """A metric to three decimals, or a dash when there is none."""
    return "—" if x is None else f"{x:.3f}"
