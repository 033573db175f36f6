"""Reading any chest X-ray file into one canonical form: 8-bit grayscale.

Radiographs arrive as 8-bit gray PNGs (the Kaggle database), RGB copies of gray images,
16-bit PNGs straight from DICOM conversions, palette or RGBA screenshots from papers, and
CMYK JPEGs. Every reader in :mod:`cxrlib` goes through :func:`read_gray`, so a model
never sees two encodings of the same picture differently.

Canonical form (documented in chapter 1):

* ``uint8`` array of shape ``(height, width)``, 0 = black, 255 = white;
* EXIF orientation applied (phone photos of films carry it);
* colour modes (RGB, RGBA, palette, CMYK, LA) converted with ITU-R 601 luma, alpha dropped;
* 16-bit and 32-bit images rescaled by their own min..max to 0..255, because DICOM
  conversions often use 10-12 of the 16 bits and a fixed ``/256`` would make them black;
* the format is sniffed from the bytes, so a JPEG named ``.png`` reads fine.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Extensions treated as images; every other file in a class folder is ignored.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

#: Images above this many pixels are refused (a decompression-bomb guard far above any
#: radiograph: a 14x17 inch detector at 100 um is about 24 megapixels).
MAX_PIXELS = 400_000_000

_HIGH_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_pil_limit_lock = threading.Lock()


class UnreadableImageError(ValueError):
    """A file with an image extension that cannot be decoded; the message is the reason."""


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True for file names with an image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@contextmanager
def _open(path: str | os.PathLike[str]) -> Iterator[Image.Image]:
    """Open with Pillow, turning every decoding failure into :class:`UnreadableImageError`."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise UnreadableImageError(f"cannot read file: {err.strerror or err}") from None
    if size == 0:
        raise UnreadableImageError("empty file (0 bytes)")
    # Pillow's bomb guard is a module global; raise it to our own limit, under a lock,
    # and restore it, so that importing cxrlib changes nothing for other code.
    with _pil_limit_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        try:
            try:
                image = Image.open(path)
            except UnidentifiedImageError:
                raise UnreadableImageError("not an image (format not recognised)") from None
            except Image.DecompressionBombError:
                raise UnreadableImageError(f"image larger than {MAX_PIXELS} pixels") from None
            except (OSError, SyntaxError, ValueError) as err:
                raise UnreadableImageError(f"cannot open image: {err}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    if image.width * image.height > MAX_PIXELS:  # Pillow itself only refuses above twice its limit
        image.close()
        raise UnreadableImageError(f"image larger than {MAX_PIXELS} pixels ({image.width}x{image.height})")
    try:
        yield image
    finally:
        image.close()


def _to_gray8(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode in _HIGH_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if high <= low:
            return np.zeros(values.shape, dtype=np.uint8)
        return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)
    if mode == "L":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in ("RGBA", "LA", "PA", "P", "CMYK", "YCbCr", "LAB", "HSV", "1", "RGBX", "La", "RGBa"):
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def decode(path: str | os.PathLike[str]) -> tuple[np.ndarray, tuple[int, int, str, str]]:
    """Decode an image file: canonical pixels and ``(width, height, mode, format)`` as stored.

    Raises:
        UnreadableImageError: the file is empty, not an image, truncated or corrupt.
    """
    with _open(path) as image:
        info = (image.width, image.height, image.mode, image.format or "?")
        try:
            image.load()
            return _to_gray8(image), info
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise UnreadableImageError(f"truncated or corrupt image data: {err}") from None


def read_gray(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file into the canonical 8-bit grayscale array (see :func:`decode`)."""
    return decode(path)[0]


def image_info(path: str | os.PathLike[str]) -> tuple[int, int, str, str]:
    """``(width, height, mode, format)`` from the header, without decoding pixels."""
    with _open(path) as image:
        return image.width, image.height, image.mode, image.format or "?"


def resize_gray(pixels: np.ndarray, size: int, *, resample: int = Image.BILINEAR) -> np.ndarray:
    """Resize a gray array to ``size`` x ``size`` (aspect ratio not kept: the database's
    images are square; Pillow's bilinear filter widens with the scale, so it antialiases)."""
    if pixels.shape == (size, size):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), resample), dtype=np.uint8)
