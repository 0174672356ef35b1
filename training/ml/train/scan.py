"""Training data: scan an ImageFolder tree (:mod:`.splits` splits it reproducibly, :mod:`.dataset`
loads it as tensors).

The layout is torchvision's ImageFolder (``root/<class name>/**/<image>``, class names sorted), but
files are recognised and decoded by :mod:`training.ml.imaging`, the same code that checks uploads:
the file's content decides its format (PNG, JPEG or DICOM), never its extension, and a training
image looks exactly like an uploaded one (mode "L", EXIF orientation applied, DICOM windowed).

Everything that describes a dataset (the scan, a split) is plain JSON-able data, so the web app can
store it and evaluate every training run on that dataset on the same test images.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.ml.imaging import UploadRejected, decode_upload, sniff_format

from ..errors import MLError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "SPLITS",
    "DatasetError",
    "FolderScan",
    "dataset_file",
    "scan_image_folder",
]

#: Limits for files in a training folder: looser than uploads (a DICOM radiograph can be large),
#: still bounded so one bad file cannot exhaust a worker's memory.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_PIXELS = 80_000_000

SPLITS = ("train", "val", "test")

# sniff_format needs the 128-byte DICOM preamble plus "DICM".
_SNIFF_BYTES = 132


class DatasetError(MLError, ValueError):
    """A dataset folder, a sample list or a split that cannot be used for training."""


# --------------------------------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------------------------------


@dataclass
class FolderScan:
    """What :func:`scan_image_folder` found. JSON round trip with :meth:`to_dict`/:meth:`from_dict`.

    ``samples`` are ``(relative POSIX path, class index)`` in a stable order (class, then path), so
    sample indices (and therefore stored splits) mean the same files on every scan of an unchanged
    folder. ``sha256`` is aligned with ``samples`` when the scan read whole files (``verify=True``),
    else empty.
    """

    root: str
    classes: list[str]
    samples: list[tuple[str, int]]
    class_counts: dict[str, int]
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)
    sha256: list[str] = field(default_factory=list)
    verified: bool = True
    outside: list[str] = field(default_factory=list)
    #: The DICOM PatientID of each sample ("" for PNG, JPEG, or no PatientID), aligned with
    #: ``samples`` when the scan decoded the files (``verify=True``), else empty.
    patient_ids: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "classes": list(self.classes),
            "samples": [[path, label] for path, label in self.samples],
            "class_counts": dict(self.class_counts),
            "unreadable": [[path, reason] for path, reason in self.unreadable],
            "skipped": list(self.skipped),
            "formats": dict(self.formats),
            "sha256": list(self.sha256),
            "verified": self.verified,
            "outside": list(self.outside),
            "patient_ids": list(self.patient_ids),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FolderScan:
        return cls(
            root=str(d["root"]),
            classes=[str(c) for c in d["classes"]],
            samples=[(str(p), int(label)) for p, label in d["samples"]],
            class_counts={str(k): int(v) for k, v in d["class_counts"].items()},
            unreadable=[(str(p), str(r)) for p, r in d.get("unreadable", [])],
            skipped=[str(p) for p in d.get("skipped", [])],
            formats={str(k): int(v) for k, v in d.get("formats", {}).items()},
            sha256=[str(h) for h in d.get("sha256", [])],
            verified=bool(d.get("verified", True)),
            outside=[str(p) for p in d.get("outside", [])],
            patient_ids=[str(p) for p in d.get("patient_ids", [])],
        )


def _entries_kept(
    root: Path,
    folder: Path,
    names: Iterable[str],
    base: Path,
    *,
    skipped: list[str],
    outside: list[str],
) -> list[tuple[str, str]]:
    """(name, path relative to root) of the entries of `folder` to walk or read, sorted; hidden
    ones go to `skipped` and those resolving outside `base` to `outside`, by relative path."""
    kept = []
    for name in sorted(names):
        rel = _relative(root, folder / name)
        if _hidden(name):
            skipped.append(rel)
        elif _resolved_inside(folder / name, base) is None:
            outside.append(rel)
        else:
            kept.append((name, rel))
    return kept


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__")


def _resolved_inside(path: Path, root: Path) -> Path | None:
    """``path`` with its links followed, if that lies under ``root`` (itself resolved); else None
    (a link that leads elsewhere, a link loop)."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return None
    return resolved if resolved.is_relative_to(root) else None


def dataset_file(root: str | os.PathLike[str], rel: str) -> Path:
    """The file ``rel`` of the dataset folder ``root``, if it (links followed) is still inside
    that folder; a :class:`DatasetError` otherwise, so that no read leaves the dataset."""
    base = Path(root).resolve()
    path = _resolved_inside(base / rel, base)
    if path is None or Path(rel).is_absolute():
        raise DatasetError(
            f"{rel} in the dataset folder {root} leads outside that folder (a link): it is not "
            f"read. Remove the link, or copy the files into the folder, then rescan the dataset."
        )
    return path


def scan_image_folder(
    root: str | os.PathLike[str],
    *,
    verify: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> FolderScan:
    """Scan an ImageFolder tree: one sub-folder per class (sorted names), images anywhere below.

    ``verify=True`` decodes every image once (and hashes it), so damaged files end up in
    ``unreadable`` now instead of failing a training run hours later. ``verify=False`` only sniffs
    the first bytes (fast, for a first look at a big folder); a damaged file then fails when it is
    loaded, with a :class:`DatasetError` naming it.

    Files whose content is not PNG, JPEG or DICOM (notes, CSVs, ``.DS_Store``, hidden files) are
    listed in ``skipped``. ``progress(done, total)`` is called once per file.

    Links are followed only within the folder: a class folder, sub-folder or file whose resolved
    path lies outside ``root`` (resolved) is left out and listed in ``outside`` by its name inside
    the dataset, never by where it leads; a folder reached twice (a link loop) is walked once.

    Raises :class:`DatasetError` when the folder is missing, has fewer than two class folders, or
    a class folder holds no readable image.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        what = "is not a folder" if root_path.exists() else "does not exist"
        raise DatasetError(
            f"Dataset folder {root_path} {what}. Give the path of a folder with one sub-folder "
            f"per class (e.g. {root_path}/NORMAL/*.png, {root_path}/PNEUMONIA/*.png)."
        )
    skipped: list[str] = []
    outside: list[str] = []
    class_dirs = _class_folders(root_path, skipped=skipped, outside=outside)
    files = _class_files(root_path, class_dirs, skipped=skipped, outside=outside)

    samples: list[tuple[str, int]] = []
    unreadable: list[tuple[str, str]] = []
    hashes: list[str] = []
    patient_ids: list[str] = []
    formats: Counter[str] = Counter()
    for done, (rel, label) in enumerate(files, start=1):
        checked = _check_file(
            root_path / rel, verify=verify, max_bytes=max_bytes, max_pixels=max_pixels
        )
        if checked.kind == "skipped":
            skipped.append(rel)
        elif checked.kind == "unreadable":
            unreadable.append((rel, checked.detail))
        else:
            formats[checked.detail] += 1
            samples.append((rel, label))
            if checked.sha256 is not None:
                hashes.append(checked.sha256)
                patient_ids.append(checked.patient_id)
        if progress is not None:
            progress(done, len(files))

    counts = Counter(label for _, label in samples)
    class_counts = {name: counts.get(i, 0) for i, name in enumerate(class_dirs)}
    _check_every_class_has_images(root_path, class_counts, unreadable)
    if unreadable:
        logger.warning("%d unreadable files in %s", len(unreadable), root_path)
    if outside:
        logger.warning("%d links leading outside %s left out", len(outside), root_path)
    return FolderScan(
        root=str(root_path),
        classes=class_dirs,
        samples=samples,
        class_counts=class_counts,
        unreadable=unreadable,
        skipped=skipped,
        formats=dict(formats),
        sha256=hashes,
        verified=verify,
        outside=outside,
        patient_ids=patient_ids,
    )


def _class_folders(root_path: Path, *, skipped: list[str], outside: list[str]) -> list[str]:
    """The class folders at the top of ``root_path``, sorted; at least two."""
    base = root_path.resolve()
    class_dirs: list[str] = []
    for entry in sorted(os.scandir(root_path), key=lambda e: e.name):
        if _resolved_inside(Path(entry.path), base) is None:
            outside.append(entry.name)
        elif entry.is_dir() and not _hidden(entry.name):
            class_dirs.append(entry.name)
        else:
            skipped.append(entry.name)  # files at the top level belong to no class
    if len(class_dirs) < 2:
        found = f"only {class_dirs[0]!r}" if class_dirs else "none"
        left_out = (
            (
                f" ({', '.join(map(repr, outside))} left out: links that lead outside the "
                "dataset folder)"
            )
            if outside
            else ""
        )
        raise DatasetError(
            f"Dataset folder {root_path} needs at least 2 class sub-folders (one per class, "
            f"holding that class's images); found {found}{left_out}."
        )
    return class_dirs


def _class_files(
    root_path: Path, class_dirs: list[str], *, skipped: list[str], outside: list[str]
) -> list[tuple[str, int]]:
    """(path relative to ``root_path``, label) of every file below each class folder, in class
    then path order; a folder reached twice (a link loop) is walked once."""
    base = root_path.resolve()
    files: list[tuple[str, int]] = []
    for label, name in enumerate(class_dirs):
        found: list[str] = []
        walked: set[Path] = set()
        for dirpath, dirnames, filenames in os.walk(root_path / name, followlinks=True):
            here = _resolved_inside(Path(dirpath), base)
            if here is None or here in walked:
                dirnames[:] = []
                continue
            walked.add(here)
            # Hidden folders (.ipynb_checkpoints, .git) are not data; sorted for a stable order.
            dirnames[:] = [
                name
                for name, _ in _entries_kept(
                    root_path, Path(dirpath), dirnames, base, skipped=skipped, outside=outside
                )
            ]
            found += [
                rel
                for _, rel in _entries_kept(
                    root_path, Path(dirpath), filenames, base, skipped=skipped, outside=outside
                )
            ]
        files += [(rel, label) for rel in sorted(found)]
    return files


def _check_every_class_has_images(
    root_path: Path, class_counts: dict[str, int], unreadable: list[tuple[str, str]]
) -> None:
    empty = [name for name, n in class_counts.items() if n == 0]
    if not empty:
        return
    bad = Counter(Path(rel).parts[0] for rel, _ in unreadable)
    details = ", ".join(
        f"{name!r} ({bad[name]} unreadable)" if bad.get(name) else repr(name) for name in empty
    )
    raise DatasetError(
        f"Class folder(s) {details} in {root_path} hold no readable PNG, JPEG or DICOM image. "
        f"Add images to them, or remove the folder(s) if they are not classes."
    )


@dataclass(frozen=True)
class _Checked:
    """What :func:`_check_file` found: kind "image" (detail: the format; sha256 and the DICOM
    PatientID when the file was read whole), "skipped" or "unreadable" (detail: why)."""

    kind: str
    detail: str = ""
    sha256: str | None = None
    patient_id: str = ""


def _check_file(path: Path, *, verify: bool, max_bytes: int, max_pixels: int) -> _Checked:
    try:
        if verify:
            data = path.read_bytes()
            fmt = sniff_format(data)
        else:
            with open(path, "rb") as f:
                fmt = sniff_format(f.read(_SNIFF_BYTES))
    except OSError as exc:
        return _Checked("unreadable", f"cannot be read: {exc.strerror or exc}")
    if fmt is None:
        return _Checked("skipped")
    if not verify:
        return _Checked("image", fmt)
    try:
        # Checked as uploads are: an 8-bit grayscale JPEG at an eighth of its size.
        decoded = decode_upload(data, max_bytes=max_bytes, max_pixels=max_pixels, check_only=True)
    except UploadRejected as exc:
        return _Checked("unreadable", str(exc))
    patient_id = decoded.dicom.patient_id if decoded.dicom is not None else ""
    return _Checked("image", fmt, _sha256_bytes(data), patient_id)


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
