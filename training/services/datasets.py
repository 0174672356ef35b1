"""Datasets: register an ImageFolder tree, scan it (every file decoded once), store a split."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from training.dispatch import dataset_scan_enqueue_on_commit
from training.models import Dataset

if TYPE_CHECKING:
    from training.ml.train.scan import FolderScan
    from training.ml.train.splits import ScanGroups

logger = logging.getLogger(__name__)


class DatasetRejected(ValueError):
    """The folder cannot become a dataset; the message says why."""


OUTSIDE_ROOTS = (
    "Datasets are registered only from folders under the dataset roots this server "
    "is configured with (CXR_DATASET_ROOTS): ask its administrator to put or mount "
    "the folder there."
)


def path_under_roots(path: str, roots: list) -> Path | None:
    """`path` with symlinks and ".." resolved, if it lies under one of `roots`; else None, decided
    before any look at whether it exists, so that answers cannot map the server's folders."""
    try:
        resolved = Path(path).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop
        return None
    if any(resolved.is_relative_to(Path(allowed).resolve()) for allowed in roots):
        return resolved
    return None


def dataset_root_resolve(root: str) -> Path:
    """The folder, resolved, if it lies under one of CXR_DATASET_ROOTS; anywhere else it is
    refused with one message."""
    path = path_under_roots(root, settings.CXR_DATASET_ROOTS)
    if path is None:
        raise DatasetRejected(OUTSIDE_ROOTS)
    return path


def dataset_folder(dataset: Dataset) -> str:
    """The dataset's folder as read now: still under CXR_DATASET_ROOTS once its links are followed
    (it may have been replaced by a link since it was registered), else DatasetRejected. The files
    in it are read only where they resolve inside it (``training.ml.train.scan.dataset_file``)."""
    path = path_under_roots(dataset.root, settings.CXR_DATASET_ROOTS)
    if path is None:
        raise DatasetRejected(OUTSIDE_ROOTS)
    return str(path)


def dataset_register(
    *,
    name: str,
    root: str,
    created_by=None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    scan_now: bool = True,
    group_patterns: Sequence[str] = (),
    groups_csv: str | None = None,
) -> Dataset:
    """Register a folder as a dataset. With scan_now (commands), scan it here; else the caller
    queues the scan on the training queue (web).

    ``group_patterns`` (regexes with a named group ``patient``, over the path relative to the
    folder) or ``groups_csv`` (the text of a ``path,patient`` CSV) keep each patient's images in
    one split; DICOM files are grouped by their PatientID without either.
    """
    name = name.strip()
    if not name:
        raise DatasetRejected("Give the dataset a name.")
    if Dataset.objects.filter(name=name).exists():
        raise DatasetRejected(f"A dataset named {name!r} already exists.")
    path = dataset_root_resolve(root)
    if not path.is_dir():
        raise DatasetRejected(
            f"No such folder: {path}. Give the path of a folder with one "
            "sub-folder per class, as the training workers see it."
        )
    if not (0 < val_fraction < 0.5 and 0 < test_fraction < 0.5):
        raise DatasetRejected("The validation and test fractions must each be between 0 and 0.5.")
    patterns, csv_rows = _grouping_checked(path, list(group_patterns), groups_csv)
    dataset = Dataset.objects.create(
        name=name,
        root=str(path),
        created_by=created_by,
        split_seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        group_patterns=patterns,
        group_csv=csv_rows,
    )
    if scan_now:
        dataset = dataset_scan(dataset_id=dataset.pk)
    else:
        dataset_scan_enqueue_on_commit(dataset.pk)
    return dataset


def _grouping_checked(
    root: Path, patterns: list[str], groups_csv: str | None
) -> tuple[list[str], list[list[object]]]:
    """The patterns and the CSV's ``[line, path, patient]`` rows, checked before anything is
    stored: a pattern compiles and names ``patient``; each CSV row names a file in the folder."""
    from training.ml.train.patient_groups import (
        GroupingError,
        compile_patient_patterns,
        parse_groups_csv,
    )
    from training.ml.train.scan import DatasetError, dataset_file

    patterns = [p for p in patterns if p.strip()]
    if patterns and groups_csv:
        raise DatasetRejected("Give group patterns or a groups CSV, not both.")
    try:
        compile_patient_patterns(patterns)
        rows = parse_groups_csv(groups_csv) if groups_csv else []
    except GroupingError as exc:
        raise DatasetRejected(str(exc)) from exc
    for line, rel, _ in rows:
        try:
            is_file = dataset_file(root, rel).is_file()
        except DatasetError:
            is_file = False
        if not is_file:
            raise DatasetRejected(
                f"Groups CSV line {line}: {rel!r} is not a file in {root} (paths are relative "
                f"to the dataset folder, e.g. PNEUMONIA/person1_virus_6.jpeg)."
            )
    return patterns, [list(row) for row in rows]


def dataset_scan(*, dataset_id: int, progress=None) -> Dataset:
    """Scan the folder, list unreadable files (never crash on them), store the split."""
    from training.ml.errors import MLError
    from training.ml.train.scan import scan_image_folder
    from training.ml.train.splits import check_enough_groups, scan_groups, stratified_split

    dataset = Dataset.objects.get(pk=dataset_id)
    try:
        root = dataset_folder(dataset)
    except DatasetRejected as exc:
        Dataset.objects.filter(pk=dataset.pk).update(status=Dataset.Status.FAILED, error=str(exc))
        dataset.refresh_from_db()
        return dataset
    try:
        # Links inside the folder are followed only where they stay inside it: the rest are left
        # out and listed (scan["outside"]), by their names in the folder, not where they lead.
        scan = scan_image_folder(root, verify=True, progress=progress)
        # A patient's images, and identical files, stay on one side of the split.
        groups = scan_groups(scan, patterns=dataset.group_patterns, csv_rows=dataset.group_csv)
        split = stratified_split(
            scan.labels,
            val_fraction=dataset.val_fraction,
            test_fraction=dataset.test_fraction,
            seed=dataset.split_seed,
            group_ids=groups.group_ids,
        )
        # Refused now, not when a run finds its validation split empty.
        check_enough_groups(
            scan,
            groups,
            split,
            val_fraction=dataset.val_fraction,
            test_fraction=dataset.test_fraction,
        )
    except MLError as exc:
        Dataset.objects.filter(pk=dataset.pk).update(status=Dataset.Status.FAILED, error=str(exc))
        dataset.refresh_from_db()
        return dataset
    Dataset.objects.filter(pk=dataset.pk).update(
        status=Dataset.Status.READY,
        error="",
        classes=scan.classes,
        class_counts=scan.class_counts,
        scan=scan.to_dict(),
        unreadable=[list(u) for u in scan.unreadable],
        split=split,
        grouping=" + ".join(groups.used),
        group_stats=_group_stats(scan, split, groups),
    )
    dataset.refresh_from_db()
    logger.info(
        "dataset %s: %d images in %d classes, %d unreadable",
        dataset.name,
        dataset.size,
        len(dataset.classes),
        len(dataset.unreadable),
    )
    return dataset


def _group_stats(scan: FolderScan, split: dict[str, list[int]], groups: ScanGroups) -> dict:
    """Per split images, patients and images per patient; without a grouping, the warning when
    the file names look like several images per patient."""
    from training.ml.train.patient_groups import several_images_per_patient_hint, split_group_stats

    hint = (
        None if groups.used else several_images_per_patient_hint([rel for rel, _ in scan.samples])
    )
    return {
        "splits": split_group_stats(split, groups.group_ids),
        "unmatched": groups.unmatched if groups.used else None,
        "name_hint": hint.message() if hint is not None else "",
    }
