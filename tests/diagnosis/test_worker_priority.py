"""The worker's lower CPU priority must also hold against a web server in another session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_python

AUTOGROUP = Path("/proc/self/autogroup")

pytestmark = pytest.mark.skipif(
    not AUTOGROUP.exists(), reason="this kernel has no autogroup scheduling"
)

# Runs in a child: the autogroup line before and after the worker's hook. A process in the
# kernel's root group (PID 1's session, as under some CI runners and containers) reads an empty
# line, hence JSON rather than one line each.
SCRIPT = """
import json, logging
from diagnosis.worker.process import _nice_own_autogroup
before = open("/proc/self/autogroup").read().strip()
_nice_own_autogroup(7, logging.getLogger("test"))
print(json.dumps([before, open("/proc/self/autogroup").read().strip()]))
"""


def _run(new_session: bool) -> tuple[str, str]:
    done = run_python(SCRIPT, timeout=60, check=True, start_new_session=new_session)
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    return before, after


def test_a_worker_leading_its_own_session_lowers_its_scheduling_group() -> None:
    before, after = _run(new_session=True)
    assert before.endswith("nice 0")
    assert after.split()[0] == before.split()[0]  # the same group, its own
    assert after.endswith("nice 7")


def test_a_worker_sharing_a_session_leaves_the_group_alone() -> None:
    """The group then holds the shell and whatever else it started (the web server)."""
    before, after = _run(new_session=False)
    assert after == before  # empty for both when this runs in the root group
    assert AUTOGROUP.read_text().strip() == before  # this test's own group is untouched too
