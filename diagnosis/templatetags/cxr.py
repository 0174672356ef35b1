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
