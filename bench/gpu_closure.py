"""The packages (name==version, as installed here) that the app and the benchmark need at run
time: the requirements' top-level packages and everything they require, walked through the
installed metadata (environment markers evaluated, extras followed where asked). Used by
bench/gpu_prepare.sh; torch and torchvision and what only they need are left to the machine.

    python bench/gpu_closure.py requirements.txt requirements-nodeps.txt [--also NAME ...]
"""

from __future__ import annotations

import argparse
import re
from importlib import metadata

from packaging.requirements import Requirement

MACHINE_OWN = {"torch", "torchvision"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(top: list[Requirement]) -> dict[str, str]:
    found: dict[str, str] = {}
    todo = [(r, set(r.extras)) for r in top]
    while todo:
        req, extras = todo.pop()
        name = canonical(req.name)
        if name in MACHINE_OWN:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this environment does not use
        key = (name, frozenset(extras))
        if key in found:
            continue
        found[key] = dist.version  # type: ignore[index]
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": e}) for e in (extras or {""})
            ):
                todo.append((sub, set(sub.extras)))
    return {name: version for (name, _), version in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--also", action="append", default=[])
    args = parser.parse_args()
    top = [Requirement(n) for n in args.also]
    for path in args.files:
        for line in open(path):
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                top.append(Requirement(line))
    for name, version in sorted(closure(top).items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
