"""Short units (issue #21): no Python module of the app, the benchmark or the tests is over 400
lines; a longer one is split where its parts separate (a package, a helper module)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("cxrweb", "diagnosis", "training", "bench", "tests")
MAX_LINES = 400


def test_no_module_is_over_400_lines():
    long = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "migrations" in path.parts or "gpu-kit" in path.parts:
                continue  # generated
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                long[str(path.relative_to(REPO))] = lines
    assert not long, f"modules over {MAX_LINES} lines: {long}"
