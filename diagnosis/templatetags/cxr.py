from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def get_item(mapping, key):
    """{{ mapping|get_item:key }}: dictionary lookup with a variable key (None when absent)."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def threshold(version, label):
    """The model version's operating threshold for a class."""
    return version.threshold_for(label) if version is not None else 0.5


def _detail_text(value) -> str:
    """One audit detail value as a person reads it: lists joined, mappings as key=value."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_detail_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_detail_text(v) for v in value)
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@register.filter
def detail_items(detail) -> list[tuple[str, str]]:
    """{% for key, text in event.detail|detail_items %}: an audit event's detail as readable
    (key, text) pairs; the template escapes both, as they may carry a patient's data."""
    if not isinstance(detail, dict):
        return [("", _detail_text(detail))] if detail not in (None, "") else []
    return [(str(k).replace("_", " "), _detail_text(v)) for k, v in detail.items()]
