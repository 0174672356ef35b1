"""Training data: scan an ImageFolder tree, split it reproducibly, and load it as tensors.

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
import re
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler

from training.ml.imaging import UploadRejected, decode_upload, sniff_format

from .architectures import MLError
from .checkpoint import file_sha256

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "SPLITS",
    "CXRDataset",
    "DatasetError",
    "FolderScan",
    "check_split",
    "class_weights",
    "duplicate_group_ids",
    "duplicates_by_hash",
    "group_ids_by_pattern",
    "load_image",
    "make_loader",
    "scan_image_folder",
    "stratified_split",
    "weighted_sampler",
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
        )


def _entries_kept(root: Path, folder: Path, names: Iterable[str], base: Path, *,
                  skipped: list[str], outside: list[str]) -> list[tuple[str, str]]:
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

    base = root_path.resolve()
    skipped: list[str] = []
    outside: list[str] = []
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
        left_out = (f" ({', '.join(map(repr, outside))} left out: links that lead outside the "
                    "dataset folder)") if outside else ""
        raise DatasetError(
            f"Dataset folder {root_path} needs at least 2 class sub-folders (one per class, "
            f"holding that class's images); found {found}{left_out}."
        )

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
            dirnames[:] = [name for name, _ in _entries_kept(
                root_path, Path(dirpath), dirnames, base, skipped=skipped, outside=outside)]
            found += [rel for _, rel in _entries_kept(
                root_path, Path(dirpath), filenames, base, skipped=skipped, outside=outside)]
        files += [(rel, label) for rel in sorted(found)]

    samples: list[tuple[str, int]] = []
    unreadable: list[tuple[str, str]] = []
    hashes: list[str] = []
    formats: Counter[str] = Counter()
    for done, (rel, label) in enumerate(files, start=1):
        kind, detail, digest = _check_file(
            root_path / rel, verify=verify, max_bytes=max_bytes, max_pixels=max_pixels
        )
        if kind == "skipped":
            skipped.append(rel)
        elif kind == "unreadable":
            unreadable.append((rel, detail))
        else:
            formats[detail] += 1
            samples.append((rel, label))
            if digest is not None:
                hashes.append(digest)
        if progress is not None:
            progress(done, len(files))

    counts = Counter(label for _, label in samples)
    class_counts = {name: counts.get(i, 0) for i, name in enumerate(class_dirs)}
    empty = [name for name, n in class_counts.items() if n == 0]
    if empty:
        bad = Counter(Path(rel).parts[0] for rel, _ in unreadable)
        details = ", ".join(
            f"{name!r} ({bad[name]} unreadable)" if bad.get(name) else repr(name) for name in empty
        )
        raise DatasetError(
            f"Class folder(s) {details} in {root_path} hold no readable PNG, JPEG or DICOM image. "
            f"Add images to them, or remove the folder(s) if they are not classes."
        )
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
    )


def _check_file(
    path: Path, *, verify: bool, max_bytes: int, max_pixels: int
) -> tuple[str, str, str | None]:
    """("image", format, sha256 or None) | ("skipped", "", None) | ("unreadable", reason, None)."""
    try:
        if verify:
            data = path.read_bytes()
            fmt = sniff_format(data)
        else:
            with open(path, "rb") as f:
                fmt = sniff_format(f.read(_SNIFF_BYTES))
    except OSError as exc:
        return "unreadable", f"cannot be read: {exc.strerror or exc}", None
    if fmt is None:
        return "skipped", "", None
    if not verify:
        return "image", fmt, None
    try:
        # Checked as uploads are: an 8-bit grayscale JPEG at an eighth of its size.
        decode_upload(data, max_bytes=max_bytes, max_pixels=max_pixels, check_only=True)
    except UploadRejected as exc:
        return "unreadable", str(exc), None
    return "image", fmt, _sha256_bytes(data)


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------
# Duplicates and groups
# --------------------------------------------------------------------------------------------------


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


def group_ids_by_pattern(samples: Sequence[tuple[str, int]], pattern: str) -> list[str]:
    """Group ids from file names, e.g. ``r"^(person\\d+)_"`` for one id per patient.

    The regex is searched in the file name (not the folder); its first group (or the whole match)
    is the id. Files that do not match get an id of their own.
    """
    regex = re.compile(pattern)
    ids = []
    for index, (rel, _) in enumerate(samples):
        match = regex.search(Path(rel).name)
        if match is None:
            ids.append(f"\0{index}")
        else:
            ids.append(match.group(1) if regex.groups else match.group(0))
    return ids


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


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def load_image(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    read_long_side: int | None = None,
) -> Image.Image:
    """Decode one PNG/JPEG/DICOM file the way uploads are decoded: an 8-bit "L" image.

    ``read_long_side``: read as the workers read an upload for a model, reduced to no less than
    that on its long side (see :func:`training.ml.imaging.decode_upload`); None: every pixel.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"Cannot read {path}: {exc.strerror or exc}. Was the dataset folder moved or changed "
            f"since it was scanned? Rescan it."
        ) from exc
    try:
        return decode_upload(
            data, max_bytes=max_bytes, max_pixels=max_pixels, read_long_side=read_long_side
        ).image
    except UploadRejected as exc:
        raise DatasetError(
            f"{path} cannot be used: {exc} Rescan the dataset with verification on, which lists "
            f"such files as unreadable and leaves them out."
        ) from exc


class CXRDataset(Dataset):
    """``(transform(image), label)`` for the samples at ``indices`` (all samples when None).

    Images are decoded with :mod:`training.ml.imaging` (so DICOM works) as mode "L". ``transform``
    maps that PIL image to a tensor (see :mod:`training.ml.transforms`); without one the PIL image
    itself is returned. ``cache_size`` decoded images are kept in an LRU cache (per process: each
    DataLoader worker has its own), which pays off when decoding is slow (DICOM, large PNGs).
    ``read_long_side``: see :func:`load_image` (training passes the model's, as the workers read).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        samples: Sequence[tuple[str, int]],
        indices: Sequence[int] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        cache_size: int = 0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        read_long_side: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.samples = [(str(rel), int(label)) for rel, label in samples]
        self.indices = list(range(len(self.samples))) if indices is None else list(indices)
        bad = [i for i in self.indices if not 0 <= i < len(self.samples)]
        if bad:
            raise DatasetError(
                f"Sample indices {bad[:5]} are out of range for {len(self.samples)} samples."
            )
        self.transform = transform
        self.cache_size = int(cache_size)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.read_long_side = read_long_side
        self._cache: OrderedDict[int, Image.Image] = OrderedDict()

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> list[int]:
        """Labels of this dataset's items, in item order."""
        return [self.samples[i][1] for i in self.indices]

    def image(self, item: int) -> Image.Image:
        """The decoded "L" image of item ``item`` (not of sample ``item``)."""
        index = self.indices[item]
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        image = load_image(
            dataset_file(self.root, self.samples[index][0]), max_bytes=self.max_bytes,
            max_pixels=self.max_pixels, read_long_side=self.read_long_side,
        )
        if self.cache_size > 0:
            self._cache[index] = image
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return image

    def __getitem__(self, item: int) -> tuple[Any, int]:
        image = self.image(item)
        label = self.samples[self.indices[item]][1]
        return (self.transform(image) if self.transform is not None else image), label


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool = False,
    sampler: Sampler[int] | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int | None = None,
) -> DataLoader:
    """A DataLoader with defaults for small CPU machines.

    ``num_workers=0`` decodes in the training process (no fork, no CUDA-in-fork trouble, and on 2
    cores the model needs both anyway). Memory is pinned only when CUDA is there. ``seed`` fixes
    the shuffling order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}.")
    if sampler is not None and shuffle:
        raise ValueError("Pass either shuffle=True or a sampler, not both (the sampler decides).")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        generator=generator,
    )


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights for ``CrossEntropyLoss(weight=...)``.

    ``n / (k * count_c)`` with ``k`` the number of classes present (scikit-learn's "balanced"):
    the average weight per training image is 1, so the loss keeps its scale. A class with no
    images gets weight 1 (it never occurs as a target, so its weight does not matter).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if len(counts) > num_classes:
        raise ValueError(f"labels hold class indices >= num_classes ({num_classes}).")
    n = counts.sum()
    weights = np.ones(num_classes, dtype=np.float64)
    present = counts > 0
    weights[present] = n / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def weighted_sampler(
    labels: Sequence[int],
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """Sample each class equally often on average (with replacement), one epoch = len(labels)."""
    if not len(labels):
        raise ValueError("weighted_sampler needs at least one label.")
    array = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(array)
    weights = 1.0 / counts[array]
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double),
        num_samples=len(labels) if num_samples is None else num_samples,
        replacement=True,
        generator=generator,
    )
