"""Images in: every format and mode people upload, refused in one line when they are not images.

``load_image`` accepts a path, bytes or a binary file-like (Streamlit's ``UploadedFile``) holding a
PNG, JPEG, WebP, GIF (first frame), BMP or TIFF in any common mode, honours the EXIF orientation,
and returns a fully loaded RGB image. Empty, truncated, corrupt or non-image data and decompression
bombs raise :class:`ExplainerError` with a one-line message; a bomb is refused from its header,
before any pixel memory is allocated. Pillow's process-wide settings (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``, the warning filters) are never changed.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ExplainerError, one_line

Source = Union[str, Path, bytes, bytearray, memoryview, BinaryIO]
MAX_PIXELS = 50_000_000
# what Image.open may identify; everything else is refused before decoding (no EPS/Ghostscript etc.)
FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM")  # PPM: Netpbm PBM/PGM/PPM
_SUPPORTED = "PNG, JPEG, WebP, GIF, BMP or TIFF"


def _read(src: Source) -> tuple[bytes, str]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), "image"
    if isinstance(src, (str, Path)):
        p = Path(src).expanduser()
        if not p.exists():
            raise ExplainerError(f"{p}: no such file")
        if not p.is_file():
            raise ExplainerError(f"{p}: not a file")
        try:
            return p.read_bytes(), p.name
        except OSError as e:
            raise ExplainerError(f"{p}: cannot read the file ({e.strerror or type(e).__name__})") from None
    if hasattr(src, "read"):
        name = Path(str(getattr(src, "name", "") or "the upload")).name
        if hasattr(src, "seek"):
            try:
                src.seek(0)
            except (OSError, ValueError):
                pass  # a pipe or a closed stream: read what is there
        data = src.read()
        if isinstance(data, str):
            raise ExplainerError(f"{name}: opened as text; open image files in binary mode ('rb')")
        return bytes(data or b""), name
    raise ExplainerError(f"cannot read an image from {type(src).__name__}")



def load_image(src: Source, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``src`` into a loaded RGB image, or raise ``ExplainerError`` with a one-line reason.

    ``max_pixels`` bounds width × height, checked from the header before any pixel is decoded.
    Pillow's own bomb limit (``Image.MAX_IMAGE_PIXELS``) still refuses anything above it.
    """
    data, name = _read(src)
    if not data:
        raise ExplainerError(f"{name}: the file is empty")
    with warnings.catch_warnings():
        # Pillow warns about odd metadata (EXIF, TIFF tags, palettes): nothing the user can act on.
        warnings.simplefilter("ignore")
        if max_pixels <= (Image.MAX_IMAGE_PIXELS or 0):
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))  # reads the header only
            w, h = img.size
            if w <= 0 or h <= 0:
                raise ExplainerError(f"{name}: the image has no pixels")
            if w * h > max_pixels:
                raise ExplainerError(
                    f"{name}: {w}x{h} pixels is more than the {max_pixels:,} allowed (a decompression bomb?)"
                )
            if img.format not in FORMATS:
                raise ExplainerError(f"{name}: {img.format} images are not supported; use {_SUPPORTED}")
            img.seek(0)  # GIF / animated WebP / multi-page TIFF: the first frame
            img.load()  # decodes; truncated or corrupt data fails here
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - broken EXIF: keep the pixels as stored
                pass
            return to_rgb(img)
        except ExplainerError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ExplainerError(f"{name}: its header claims too many pixels (a decompression bomb?)") from None
        except UnidentifiedImageError:
            raise ExplainerError(f"{name}: not an image that can be read; use {_SUPPORTED}") from None
        except MemoryError:
            raise ExplainerError(f"{name}: not enough memory to decode the image") from None
        except Exception as e:  # noqa: BLE001 - OSError, SyntaxError, EOFError, zlib.error, struct.error ...
            reason = one_line(e)
            if "truncated" in reason.lower() or isinstance(e, EOFError):
                reason = "the file is truncated"
            raise ExplainerError(f"{name}: corrupt or truncated image ({reason})") from None


def _grey_to_rgb(arr: np.ndarray, lo: float, hi: float) -> Image.Image:
    arr = np.nan_to_num(arr.astype(np.float32), nan=lo, posinf=hi, neginf=lo)
    grey = np.clip((arr - lo) / ((hi - lo) or 1.0) * 255.0, 0, 255).round().astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB.

    Alpha (RGBA, LA, PA, P with a transparent colour) is composited over white. 16-bit grey
    (``I;16*``) is scaled by the type's range, 0..65535 -> 0..255 (never clipped); ``I`` (32-bit)
    the same when its values fit 16 bits, else by its own min..max. ``F`` is taken as 0..1 when it
    lies there, else scaled by its own min..max. CMYK, YCbCr, HSV, L and 1 use Pillow's conversions,
    LAB goes through LittleCMS.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        finite = arr[np.isfinite(arr)] if mode == "F" else arr
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 0.0
        if mode.startswith("I;16") and arr.dtype.kind == "u":
            return _grey_to_rgb(arr, 0.0, 65535.0)
        if mode != "F" and lo >= 0 and hi <= 65535:
            return _grey_to_rgb(arr, 0.0, 65535.0)
        if mode == "F" and lo >= 0 and hi <= 1:
            return _grey_to_rgb(arr, 0.0, 1.0)
        return _grey_to_rgb(arr, lo, hi)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "LAB":
        from PIL import ImageCms

        lab2rgb = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
        return ImageCms.applyTransform(img, lab2rgb)
    # L, 1, CMYK, YCbCr, HSV: Pillow's own conversions
    return img.convert("RGB")
