"""Duplicates, groups and reproducible splits of a scanned dataset (plain JSON-able index lists,
so the web app can store a split and evaluate every run on the same test images)."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..models.checkpoint import file_sha256
from .patient_groups import (
    GroupingError,
    patient_ids_by_patterns,
    patient_ids_from_csv,
    union_group_ids,
)
from .scan import SPLITS, DatasetError, FolderScan, dataset_file

__all__ = [
    "ScanGroups",
    "check_enough_groups",
    "check_split",
    "duplicate_group_ids",
    "duplicates_by_hash",
    "scan_groups",
    "stratified_split",
]


def duplicates_by_hash(
    root: str | os.PathLike[str],
    samples: Sequence[tuple[str, int]],
    *,
    hashes: Sequence[str] | None = None,
) -> list[list[int]]:
    """Groups of sample indices whose files are byte-identical (sha256), largest group first.

    Pass ``hashes`` (e.g. ``scan.sha256``) to skip reading the files again. A group whose members
    carry different labels is a labelling conflict worth showing to the user.
    """
    if hashes is None or len(hashes) != len(samples):
        hashes = [file_sha256(dataset_file(root, rel)) for rel, _ in samples]
    by_hash: dict[str, list[int]] = defaultdict(list)
    for index, digest in enumerate(hashes):
        by_hash[digest].append(index)
    groups = [members for members in by_hash.values() if len(members) > 1]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def duplicate_group_ids(num_samples: int, groups: Iterable[Sequence[int]]) -> list[str]:
    """One group id per sample for :func:`stratified_split`: duplicates share an id."""
    ids = [f"s{i}" for i in range(num_samples)]
    for members in groups:
        leader = min(members)
        for index in members:
            ids[index] = f"s{leader}"
    return ids


@dataclass(frozen=True)
class ScanGroups:
    """What :func:`scan_groups` found: one group id per sample, the sources of patient ids that
    were used (``"pattern"``, ``"csv"``, ``"dicom PatientID"``; empty: none), and how many samples
    no source named a patient for (each its own group, unless a duplicate)."""

    group_ids: list[str]
    used: list[str]
    unmatched: int


def scan_groups(
    scan: FolderScan,
    *,
    patterns: Sequence[str] = (),
    csv_rows: Iterable[Sequence[object]] = (),
) -> ScanGroups:
    """Group ids for :func:`stratified_split`: a patient's images (named by the patterns, the CSV
    rows or the DICOM PatientID the scan read) and identical files share a group.

    A patient named by a pattern or the CSV wins over the file's DICOM PatientID: an anonymised
    export gives every file the same PatientID ("ANON"), and the pattern or CSV is how the user
    says who the patients really are. The PatientID still groups the images they do not name.
    """
    paths = [rel for rel, _ in scan.samples]
    keys: list[Sequence[str | None]] = [
        duplicate_group_ids(
            len(paths), duplicates_by_hash(scan.root, scan.samples, hashes=scan.sha256)
        )
    ]
    patients: list[list[str | None]] = []
    used: list[str] = []
    if patterns:
        patients.append(patient_ids_by_patterns(paths, patterns))
        used.append("pattern")
    csv_rows = list(csv_rows)
    if csv_rows:
        known = {rel for rel, _ in scan.unreadable} | set(scan.skipped)
        patients.append(patient_ids_from_csv(paths, csv_rows, known=known))
        used.append("csv")
    named = [any(ids[i] is not None for ids in patients) for i in range(len(paths))]
    dicom = [
        None if named_by_user else (patient_id or None)
        for named_by_user, patient_id in zip(
            named, scan.patient_ids or [""] * len(paths), strict=True
        )
    ]
    if any(dicom):
        patients.append(dicom)
        used.append("dicom PatientID")
    unmatched = sum(all(ids[i] is None for ids in patients) for i in range(len(paths)))
    return ScanGroups(union_group_ids(len(paths), *keys, *patients), used, unmatched)


def check_enough_groups(
    scan: FolderScan,
    groups: ScanGroups,
    split: Mapping[str, Sequence[int]],
    *,
    val_fraction: float,
    test_fraction: float,
) -> None:
    """Refuse a patient-grouped split that leaves a class out of a split it needs.

    Each split with a fraction above 0 (train always) needs images of each class, so that the
    class can be trained on and measured. A class with enough images for that but too few
    patients (all DICOM files carrying one PatientID, a pattern that captures too little) raises
    a :class:`~.patient_groups.GroupingError` saying what to do; a class with fewer images than
    splits is not the grouping's fault and is left as it is. Without a patient grouping nothing
    is checked.
    """
    if not groups.used:
        return
    labels = [label for _, label in scan.samples]
    needed = ["train"] + [
        name for name, fraction in (("val", val_fraction), ("test", test_fraction)) if fraction > 0
    ]
    present = {name: {labels[i] for i in split.get(name, [])} for name in needed}
    images = Counter(labels)
    patients: dict[int, set[str]] = defaultdict(set)
    for label, group in zip(labels, groups.group_ids, strict=True):
        patients[label].add(group)
    short = []
    for label in sorted(images):
        missing = [name for name in needed if label not in present[name]]
        if missing and images[label] >= len(needed):
            short.append(
                f"{scan.classes[label]!r} has {images[label]} images of "
                f"{len(patients[label])} patient(s), none in {' or '.join(missing)}"
            )
    if not short:
        return
    message = (
        f"Grouping by {' + '.join(groups.used)} leaves too few patients to split: "
        f"{'; '.join(short)}."
    )
    shared = _shared_dicom_patient_id(scan)
    if "dicom PatientID" in groups.used and shared is not None:
        message += (
            f" All {shared[1]} DICOM files carry the same PatientID {shared[0]!r} (an anonymised "
            f"export?), so it does not tell the patients apart."
        )
    if "pattern" in groups.used or "csv" in groups.used:
        message += (
            " Check the group pattern or the groups CSV: it puts too many images under one patient."
        )
    reexport = (
        ", or re-export the DICOM files with their real PatientIDs"
        if "dicom PatientID" in groups.used
        else ""
    )
    raise GroupingError(
        f"{message} Register the folder again with patient group patterns or a groups CSV "
        f'(register_dataset --group-pattern or --groups; the form\'s "Patient group patterns" '
        f"or \"Or a patient groups CSV\") that name each image's patient ('(?P<patient>.+)' "
        f"makes each image its own patient, when no two are of the same patient){reexport}."
    )


def _shared_dicom_patient_id(scan: FolderScan) -> tuple[str, int] | None:
    """(PatientID, files) when at least two DICOM files all carry the same PatientID."""
    ids = Counter(p for p in scan.patient_ids if p)
    if len(ids) == 1:
        [(patient_id, files)] = ids.items()
        if files >= 2:
            return patient_id, files
    return None


# --------------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------------


def stratified_split(
    labels: Sequence[int],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    group_ids: Sequence[str] | None = None,
) -> dict[str, list[int]]:
    """Split sample indices into ``{"train", "val", "test"}`` lists, class by class.

    Deterministic for a seed, and each class is shuffled with its own generator (seeded by
    ``(seed, class)``), so adding images of one class does not reshuffle the others. A class with
    at least 3 units gets at least one in each split (whose fraction is > 0); with 2, one goes to
    train and one to test; with 1, it goes to train.

    ``group_ids`` (one per sample) keeps samples of a group (a patient, duplicate files) in the
    same split; a group counts for the class most of its images have. The result holds only ints
    in sorted lists, ready for JSON.
    """
    labels = [int(label) for label in labels]
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
            raise ValueError(f"{name} must be a number from 0 to below 1, got {value!r}.")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must leave images for training, got "
            f"{val_fraction} + {test_fraction} >= 1."
        )
    if group_ids is not None and len(group_ids) != len(labels):
        raise ValueError(f"group_ids has {len(group_ids)} entries for {len(labels)} labels.")
    if any(label < 0 for label in labels):
        raise ValueError("labels must be non-negative class indices.")

    # Units: groups of indices that move together (single images without group_ids).
    members: dict[object, list[int]] = {}
    for index in range(len(labels)):
        key = group_ids[index] if group_ids is not None else index
        members.setdefault(key, []).append(index)
    units_by_class: dict[int, list[list[int]]] = defaultdict(list)
    for unit in members.values():
        votes = Counter(labels[i] for i in unit)
        label = min(votes, key=lambda c: (-votes[c], c))
        units_by_class[label].append(unit)

    split: dict[str, list[int]] = {name: [] for name in SPLITS}
    for label in sorted(units_by_class):
        units = units_by_class[label]
        order = np.random.default_rng([seed, label]).permutation(len(units))
        shuffled = [units[i] for i in order]
        for name, chosen in _allocate(shuffled, val_fraction, test_fraction).items():
            for unit in chosen:
                split[name].extend(unit)
    return {name: sorted(indices) for name, indices in split.items()}


def _allocate(
    units: list[list[int]], val_fraction: float, test_fraction: float
) -> dict[str, list[list[int]]]:
    """Deal one class's shuffled units to the splits, closest to the image-count targets."""
    out: dict[str, list[list[int]]] = {name: [] for name in SPLITS}
    total = sum(len(u) for u in units)
    fractions = {"val": val_fraction, "test": test_fraction}
    targets = {name: round(total * f) for name, f in fractions.items()}
    counts = dict.fromkeys(SPLITS, 0)

    def put(name: str, unit: list[int]) -> None:
        out[name].append(unit)
        counts[name] += len(unit)

    rest = list(units)
    if len(rest) >= 3:
        # Every split gets a unit first: a class missing from val or test cannot be measured.
        for name in ("test", "val"):
            if fractions[name] > 0:
                targets[name] = max(targets[name], 1)
                put(name, rest.pop(0))
        put("train", rest.pop(0))
    elif len(rest) == 2:
        put("train", rest.pop(0))
        other = "test" if test_fraction > 0 else "val" if val_fraction > 0 else "train"
        put(other, rest.pop(0))
    targets["train"] = total - targets["val"] - targets["test"]
    # A split with fraction 0 never takes a unit, even when a large group overshot the others.
    candidates = ["train"] + [name for name in ("test", "val") if fractions[name] > 0]
    for unit in rest:
        # The split furthest below its target takes the unit (ties: train, test, val).
        name = max(candidates, key=lambda s: targets[s] - counts[s])
        put(name, unit)
    return out


def check_split(split: Mapping[str, Sequence[int]], num_samples: int) -> dict[str, list[int]]:
    """Validate a stored split against a sample list; returns it with plain int lists.

    Raises :class:`DatasetError` for unknown keys, indices out of range, an index in two splits,
    or an empty train or val split (training and calibration need both).
    """
    if not isinstance(split, Mapping) or set(split) - set(SPLITS):
        keys = sorted(split) if isinstance(split, Mapping) else type(split).__name__
        raise DatasetError(f"A split must be a dict with keys {SPLITS}, got {keys}.")
    clean = {name: [int(i) for i in split.get(name, [])] for name in SPLITS}
    seen: dict[int, str] = {}
    for name, indices in clean.items():
        for index in indices:
            if not 0 <= index < num_samples:
                raise DatasetError(
                    f"The {name} split refers to sample {index}, but the dataset has "
                    f"{num_samples} samples. Was the folder changed since it was split? Rescan "
                    f"and split it again."
                )
            if index in seen:
                raise DatasetError(
                    f"Sample {index} is in both the {seen[index]} and the {name} split: a model "
                    f"must never be evaluated on images it trained on."
                )
            seen[index] = name
    for name in ("train", "val"):
        if not clean[name]:
            raise DatasetError(
                f"The {name} split is empty. Training needs images in train, and early stopping "
                f"and calibration need images in val: use a larger dataset or other fractions."
            )
    return clean
