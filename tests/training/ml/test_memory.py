"""A worker keeps its freed buffers for the next prediction instead of re-faulting them."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import run_python

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="page-fault counts of glibc's malloc"
)

# In a child, so the setting does not outlive the test: the page faults of 20 allocations of a
# 40 MB buffer, each freed before the next, as a prediction's buffers are. 40 MB is above the
# largest threshold glibc's own heuristics reach (32 MB), so by default each one is a fresh
# mapping whose 10,000 pages are all faulted in again.
SCRIPT = """
import resource, sys
import numpy as np
from training.ml.memory import retain_freed_memory
took = retain_freed_memory(int(sys.argv[1]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    buffer = np.ones(40 * 1024 * 1024, dtype=np.uint8)
    del buffer
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 40 * 1024 * 1024 // 4096  # of 4 KiB


def _faults(retain_mb: int) -> tuple[bool, int]:
    out = run_python(SCRIPT, str(retain_mb), check=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    took, retained = _faults(256)
    if not took:
        pytest.skip("this C library has no mallopt (not glibc)")
    assert retained < PAGES  # at most the first buffer's pages, then reuse
    took_default, default = _faults(0)  # 0: glibc's defaults, untouched
    assert not took_default
    # Every buffer mapped afresh (fewer faults than pages where the kernel uses huge pages).
    assert default > 10 * retained
