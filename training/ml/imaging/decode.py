"""The entry point: :func:`decode_upload` checks and decodes one file, whatever its format."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

from PIL import Image

from training.ml.preprocessing import reduce_for_reading

from .decoded import DecodedImage
from .dicom import decode_dicom
from .errors import (
    UploadRejected,
    describe_exception,
    reject_corrupt,
    reject_too_large,
    reject_unsupported,
)
from .policy import UploadPolicy
from .raster import decode_raster
from .sniff import sniff_format

logger = logging.getLogger(__name__)


def decode_upload(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    read_long_side: int | None = None,
    check_only: bool = False,
    policy: UploadPolicy | None = None,
) -> DecodedImage:
    """Validate and decode one uploaded file.

    Returns the image as 8-bit grayscale (mode "L"). Raises :class:`UploadRejected` for
    anything we refuse: empty, over ``max_bytes``, not PNG/JPEG/DICOM by content, more than
    ``max_pixels`` pixels (checked before decoding), damaged, a DICOM without an image, or a
    DICOM compression we cannot decode.

    ``width`` and ``height`` are always the stored size; ``image`` may be smaller:

    - ``read_long_side``: ``image`` is read for a model as the workers read an upload's display
      copy, no smaller than that on its long side (the model's
      :func:`~training.ml.preprocessing.reading_long_side`): a JPEG that is its own display copy
      reduced by its decoder (:func:`~training.ml.preprocessing.jpeg_draft`), anything larger
      then by a whole factor (:func:`~training.ml.preprocessing.reduce_for_reading`). Training
      and the benchmark's floor read so;
    - ``check_only``: the upload path, which needs the pixels only to write a display copy. A
      file that is its own display copy (``original_is_display``) is only checked: decoded at an
      eighth of its size, every step of the file still read.

    ``policy``: what a user's upload must also be (:class:`UploadPolicy`); training datasets,
    read with none, keep their small or unusual images.

    Memory stays near one 8-bit copy of the picture (two with the display copy's encoding), not
    one per colour channel or a float copy: colour PNGs are turned grey by libpng row by row,
    colour JPEGs decode their luma only, 16-bit pictures are scaled a strip at a time.
    """
    size = len(data)
    if size == 0:
        raise UploadRejected(
            "The uploaded file is empty (0 bytes). Please choose the image file again and "
            "re-upload it.",
            code="empty",
        )
    if size > max_bytes:
        raise reject_too_large(size, max_bytes)
    fmt = sniff_format(data)
    if fmt is None:
        raise reject_unsupported(data)

    try:
        with _decompression_bomb_guard():
            if fmt == "DICOM":
                decoded = decode_dicom(
                    data, max_bytes=max_bytes, max_pixels=max_pixels, policy=policy
                )
            else:
                draft = 1 if check_only else read_long_side
                decoded = decode_raster(
                    data, fmt, max_pixels=max_pixels, draft_long_side=draft, policy=policy
                )
            if read_long_side is not None:
                decoded.image = reduce_for_reading(decoded.image, read_long_side)
            return decoded
    except UploadRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        logger.info("upload rejected by Pillow's decompression-bomb check: %s", exc)
        raise UploadRejected(
            "The image declares more pixels than can be decoded safely (a possible "
            "decompression bomb). Please upload a downscaled copy of the image.",
            code="too_many_pixels",
        ) from exc
    except MemoryError as exc:
        raise UploadRejected(
            "The image is too big to decode on this server. Please upload a downscaled copy.",
            code="too_many_pixels",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the boundary: any decoder failure is a bad file
        logger.info("upload rejected as corrupt %s", fmt, exc_info=True)
        raise reject_corrupt(fmt, describe_exception(exc)) from exc


@contextlib.contextmanager
def _decompression_bomb_guard() -> Iterator[None]:
    """Make Pillow's DecompressionBombWarning an error for the duration of a decode.

    ``warnings.catch_warnings`` restores the previous filters on exit, so nothing leaks into
    the rest of the process. (It is not thread-safe on Python < 3.14: two overlapping threads
    can at worst leave this stricter filter installed, which is harmless. The explicit
    ``max_pixels`` check is the real guard and does not depend on it.)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # pydicom warns about every odd header value of real-world files ("Invalid value for
        # VR DA"); we handle bad values ourselves, so keep them out of the web log.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
        yield
