"""Patient groups for splitting a dataset: no patient's images on both sides of a split.

A random split per image puts a patient's other images in the test split when they trained the
model, and the test accuracy then measures memory, not generalisation. A patient id per image
comes from a regex over the path (a named group ``patient``), a CSV (``path,patient``) or the
DICOM PatientID; identical files (same sha256) join the same group. Everything here is plain
Python over relative paths and index lists, so the web app stores the result as JSON.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from .scan import SPLITS, DatasetError

__all__ = [
    "PATIENT_GROUP",
    "GroupingError",
    "NameHint",
    "compile_patient_patterns",
    "name_prefix",
    "parse_groups_csv",
    "patient_ids_by_patterns",
    "patient_ids_from_csv",
    "patients_in_several_splits",
    "several_images_per_patient_hint",
    "split_group_stats",
    "union_group_ids",
]

#: The regex group that names the patient in a ``--group-pattern``.
PATIENT_GROUP = "patient"


class GroupingError(DatasetError):
    """A group pattern or a groups CSV that cannot be used; the message says what to fix."""


# --------------------------------------------------------------------------------------------------
# Patient ids: patterns, CSV
# --------------------------------------------------------------------------------------------------


def compile_patient_patterns(patterns: Iterable[str]) -> list[re.Pattern[str]]:
    """Compile each regex; one that does not compile or has no group named ``patient`` is refused."""
    compiled = []
    for pattern in patterns:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise GroupingError(
                f"The group pattern {pattern!r} is not a valid regex: {exc}."
            ) from exc
        if PATIENT_GROUP not in regex.groupindex:
            raise GroupingError(
                f"The group pattern {pattern!r} has no group named {PATIENT_GROUP!r}: name the "
                f"part of the path that identifies the patient, e.g. "
                rf"'person(?P<patient>\d+)_' or '(?P<patient>IM-\d+)-'."
            )
        compiled.append(regex)
    return compiled


def patient_ids_by_patterns(paths: Sequence[str], patterns: Iterable[str]) -> list[str | None]:
    """One patient id per relative path: the ``patient`` group of the first pattern that matches
    (searched over the whole relative path, e.g. ``PNEUMONIA/person12_virus_3.jpg``), or None.

    The same captured text under two patterns is the same patient: merging can only make a split
    more cautious, never leak a patient.
    """
    regexes = compile_patient_patterns(patterns)
    ids: list[str | None] = []
    for path in paths:
        found = None
        for regex in regexes:
            match = regex.search(path)
            if match is not None and match.group(PATIENT_GROUP):
                found = match.group(PATIENT_GROUP)
                break
        ids.append(found)
    return ids


def parse_groups_csv(text: str) -> list[tuple[int, str, str]]:
    """``(line, path, patient)`` rows of a ``path,patient`` CSV (a header row is optional).

    Refuses, naming the line: a row without exactly two columns, an empty path or patient, a
    path that is absolute or climbs out (``..``), and a path listed twice.
    """
    rows: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    for line, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != 2:
            raise GroupingError(
                f"Groups CSV line {line}: expected 2 columns (path,patient), found {len(cells)}."
            )
        path, patient = (c.strip() for c in cells)
        if not rows and not seen and (path.lower(), patient.lower()) == ("path", PATIENT_GROUP):
            continue  # the header
        path = _clean_path(path, line)
        if not patient:
            raise GroupingError(f"Groups CSV line {line}: {path!r} has no patient.")
        if path in seen:
            raise GroupingError(
                f"Groups CSV line {line}: {path!r} is listed twice (first on line {seen[path]})."
            )
        seen[path] = line
        rows.append((line, path, patient))
    if not rows:
        raise GroupingError("The groups CSV has no rows: one line per image, path,patient.")
    return rows


def _clean_path(path: str, line: int) -> str:
    if not path:
        raise GroupingError(f"Groups CSV line {line}: the path is empty.")
    pure = PurePosixPath(path.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise GroupingError(
            f"Groups CSV line {line}: {path!r} must be relative to the dataset folder "
            f"(e.g. PNEUMONIA/person1_virus_6.jpeg)."
        )
    return pure.as_posix()


def patient_ids_from_csv(
    paths: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    known: Collection[str] = (),
) -> list[str | None]:
    """One patient id per relative path from parsed CSV rows (``(line, path, patient)``), None for
    a path the CSV does not list.

    A row whose path is neither a sample nor in ``known`` (e.g. the scan's unreadable files) is
    refused, naming its line: a typo would otherwise leave that patient ungrouped.
    """
    index = {path: i for i, path in enumerate(paths)}
    ids: list[str | None] = [None] * len(paths)
    for line, path, patient in rows:
        i = index.get(str(path))
        if i is not None:
            ids[i] = str(patient)
        elif str(path) not in known:
            raise GroupingError(
                f"Groups CSV line {line}: {path!r} is not an image of this dataset (paths are "
                f"relative to the dataset folder, e.g. {paths[0] if paths else 'CLASS/image.png'!r})."
            )
    return ids


# --------------------------------------------------------------------------------------------------
# Groups for the split
# --------------------------------------------------------------------------------------------------


def union_group_ids(num_samples: int, *keys: Sequence[str | None]) -> list[str]:
    """One group id per sample for :func:`~.splits.stratified_split`: samples that share any key
    (a patient id of one source, a duplicate's id, ...) share a group, transitively.

    Each ``keys`` list is aligned with the samples; None means "no key from this source". A sample
    with no key at all is a group of its own.
    """
    parent = list(range(num_samples))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for source, ids in enumerate(keys):
        if len(ids) != num_samples:
            raise ValueError(f"Group key list {source} has {len(ids)} entries for {num_samples}.")
        first: dict[str, int] = {}
        for i, key in enumerate(ids):
            if key is None:
                continue
            j = first.setdefault(key, i)
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return [f"g{find(i)}" for i in range(num_samples)]


def split_group_stats(
    split: Mapping[str, Sequence[int]], group_ids: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Per split: ``images``, ``patients`` (groups), ``images_per_patient_mean`` and ``_max``."""
    stats: dict[str, dict[str, float | int]] = {}
    for name in SPLITS:
        per_group = Counter(group_ids[i] for i in split.get(name, []))
        images = sum(per_group.values())
        stats[name] = {
            "images": images,
            "patients": len(per_group),
            "images_per_patient_mean": round(images / len(per_group), 2) if per_group else 0.0,
            "images_per_patient_max": max(per_group.values(), default=0),
        }
    return stats


def patients_in_several_splits(
    split: Mapping[str, Sequence[int]], group_ids: Sequence[str]
) -> set[str]:
    """The groups with images in more than one split (empty for a grouped split)."""
    where: dict[str, set[str]] = {}
    for name, indices in split.items():
        for i in indices:
            where.setdefault(group_ids[i], set()).add(name)
    return {group for group, names in where.items() if len(names) > 1}


# --------------------------------------------------------------------------------------------------
# Do the file names look like several images per patient?
# --------------------------------------------------------------------------------------------------

# A digit run followed by "_" or "-" ends a candidate patient prefix (person12_, IM-0115-).
_PREFIX_END = re.compile(r"\d+(?=[_-])")
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class NameHint:
    """File names that look like several images per patient: how many, and a few examples."""

    shared_images: int
    prefixes: int
    total: int
    examples: tuple[tuple[str, int], ...]

    def message(self) -> str:
        shown = ", ".join(f"{prefix}… ({n} images)" for prefix, n in self.examples)
        return (
            f"{self.shared_images} of {self.total} file names share a prefix with another "
            f"({self.prefixes} prefixes, e.g. {shown}): they look like several images per "
            f"patient, but no patient grouping was given, so a patient's images may be in both "
            f"the training and the test split. Register the folder again with a group pattern "
            f"(or a groups CSV) so that the test split holds only unseen patients."
        )


def name_prefix(path: str) -> str | None:
    """The longest prefix of the file's stem that ends in a digit run followed by ``_`` or ``-``
    and still leaves a digit after it (``IM-0115-0001`` → ``IM-0115``, ``person12_virus_3`` →
    ``person12``, ``NORMAL2-IM-1427-0001`` → ``NORMAL2-IM-1427``); None without one."""
    stem = PurePosixPath(path).name.split(".", 1)[0]
    best = None
    for match in _PREFIX_END.finditer(stem):
        if _DIGIT.search(stem, match.end() + 1):
            best = stem[: match.end()]
    return best


def several_images_per_patient_hint(
    paths: Sequence[str], *, min_share: float = 0.2, min_images: int = 10, min_prefixes: int = 3
) -> NameHint | None:
    """A :class:`NameHint` when many file names share a patient-like prefix, else None.

    Warns when at least ``min_share`` of the names (and ``min_images``) share their prefix with
    another name, across at least ``min_prefixes`` prefixes: one batch prefix alone
    (``scan2024-...``) is not a patient.
    """
    counts = Counter(p for p in map(name_prefix, paths) if p is not None)
    shared = {prefix: n for prefix, n in counts.items() if n > 1}
    shared_images = sum(shared.values())
    if (
        len(shared) < min_prefixes
        or shared_images < min_images
        or shared_images < min_share * len(paths)
    ):
        return None
    examples = sorted(shared.items(), key=lambda item: (-item[1], item[0]))[:3]
    return NameHint(
        shared_images=shared_images,
        prefixes=len(shared),
        total=len(paths),
        examples=tuple(examples),
    )
