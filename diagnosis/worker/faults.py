"""The fault-injection hook of the fault tests (tests/faults), off unless CXR_FAULT_INJECTION."""

from __future__ import annotations

import time

from django.conf import settings

from diagnosis.models import Prediction


def inject_fault(members: list[Prediction]) -> None:
    """Test hooks (CXR_FAULT_INJECTION=true only): behave like a model that crashes on a file
    whose name contains "poison", taking down the whole forward pass it is in, or that takes
    3 s over one whose name starts with "slow": long enough for a fault test to catch it running
    even while it is still killing and replacing a worker."""
    if not settings.CXR_FAULT_INJECTION:
        return
    names = [m.image.original_filename for m in members]
    if any("poison" in name for name in names):
        raise RuntimeError("injected fault: the model crashed on this image")
    if any(name.startswith("slow") for name in names):
        time.sleep(3.0)
