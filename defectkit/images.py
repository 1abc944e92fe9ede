"""Reading images and masks from disk into one predictable form, with errors that name the file.

Images come back as uint8 RGB arrays (H, W, 3): grayscale is kept as three identical channels,
alpha is dropped, 16-bit data is scaled to 8 bits. Masks come back as boolean (H, W) arrays.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from defectkit.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# An image may declare far more pixels than its file holds (an 875 KB PNG of 30000 x 30000 px took
# 8 GB to decode): the size in its header is checked first. Raise it with DEFECTKIT_MAX_PIXELS.
MAX_PIXELS = int(os.environ.get("DEFECTKIT_MAX_PIXELS", 100_000_000))
UMASK = os.umask(0o022)
os.umask(UMASK)  # read once: tempfile creates files 0600 and folders 0700 whatever the umask says


def plain_mode(fd_or_path: int | str | Path, folder: bool = False) -> None:
    """The mode a plain ``open`` or ``mkdir`` would have given (rw for whom the umask allows)."""
    mode = (0o777 if folder else 0o666) & ~UMASK
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, mode)
    else:
        os.chmod(fd_or_path, mode)


def decode_file(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise InputError(path, "file is empty")
    pixels = declared_pixels(data)
    if pixels is not None and pixels > MAX_PIXELS:
        raise InputError(path, f"declares {pixels:,} pixels, more than the limit of {MAX_PIXELS:,} "
                               "(set DEFECTKIT_MAX_PIXELS to allow larger images)")
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise InputError(path, "not a readable image (corrupt, truncated or unsupported format)")
    return array


def declared_pixels(data: np.ndarray) -> int | None:
    """Width x height from the image's header, without decoding it; None where Pillow cannot tell
    (OpenCV then decodes it, or says it cannot)."""
    import io
    import re
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's bomb warning: the limit that counts is MAX_PIXELS
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size[0] * image.size[1]
        except Image.DecompressionBombError as exc:  # beyond even Pillow's own hard limit
            found = re.search(r"\((\d+) pixels\)", str(exc))
            return int(found.group(1)) if found else MAX_PIXELS + 1
        except Exception:  # a format Pillow does not know, or a broken header
            return None


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16-bit (or 12-bit data in 16-bit containers) and float images to uint8."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        full_scale = 4095.0 if array.max(initial=0) <= 4095 else 65535.0
        return np.clip(array.astype(np.float32) * (255.0 / full_scale) + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float32))
        scale = 255.0 if finite.max(initial=0) <= 1.0 else 1.0
        return np.clip(finite * scale + 0.5, 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def to_rgb(array: np.ndarray) -> np.ndarray:
    """Any decoded OpenCV array (gray, BGR, BGRA, any depth) -> uint8 RGB (H, W, 3)."""
    array = to_uint8(array)
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    if array.ndim == 3 and array.shape[2] == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    raise ValueError(f"unsupported image shape {array.shape}")


def from_array(array: np.ndarray, bgr: bool = False) -> np.ndarray:
    """An image handed over in memory -> uint8 RGB (H, W, 3): gray (H, W) or (H, W, 1), colour
    (H, W, 3) in RGB order (``bgr=True``: OpenCV's order), RGBA (alpha dropped); any depth."""
    array = np.asarray(array)
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))) or 0 in array.shape[:2]:
        raise ValueError(f"expected a gray (H, W) or colour (H, W, 3 or 4) image array, got shape {array.shape}")
    if array.ndim == 3 and array.shape[2] in (3, 4) and not bgr:
        return np.ascontiguousarray(to_uint8(array[:, :, :3]))
    return to_rgb(array)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); raises InputError naming the file."""
    path = Path(path)
    try:
        return to_rgb(decode_file(path))
    except ValueError as exc:
        raise InputError(path, str(exc)) from exc


def read_mask(path: str | Path, threshold: int = 127) -> np.ndarray:
    """Read a mask file as boolean (H, W): a pixel is set where its value is > threshold.

    Masks are often not strictly binary (JPEG-like compression leaves small values), hence the
    threshold. Colour masks count a pixel as set where any channel exceeds it; an RGBA mask uses
    its colour channels, not its alpha.
    """
    path = Path(path)
    array = to_uint8(decode_file(path))
    if array.ndim == 3:
        array = array[:, :, :3].max(axis=2)
    return array > threshold


def gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write an RGB or single-channel uint8 array as PNG, atomically."""
    path = Path(path)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    atomic_write_bytes(path, encoded.tobytes())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        plain_mode(fd)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # the rename below must not land before the data does
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """UTF-8; a file name that was not UTF-8 on disk (a surrogate escape) goes back to its own bytes."""
    atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"))
