"""Images in: every format and mode people upload, refused in one line when they are not images.

``load_image`` accepts a path, bytes or a binary file-like (Streamlit's ``UploadedFile``) holding a
PNG, JPEG, WebP, GIF (first frame), BMP or TIFF in any common mode, honours the EXIF orientation,
and returns a fully loaded RGB image. Empty, truncated, corrupt or non-image data and decompression
bombs raise :class:`ExplainerError`; a bomb is refused from its header, before any pixel memory
is allocated. Pillow's process-wide settings are never changed.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ExplainerError

Source = Union[str, Path, bytes, bytearray, BinaryIO]
MAX_PIXELS = 50_000_000
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "MPO")


def _read(src: Source) -> tuple[bytes, str]:
    if isinstance(src, (bytes, bytearray)):
        return bytes(src), "the image"
    if isinstance(src, (str, Path)):
        p = Path(src).expanduser()
        if not p.exists():
            raise ExplainerError(f"{p}: no such file")
        if not p.is_file():
            raise ExplainerError(f"{p}: not a file")
        return p.read_bytes(), p.name
    if hasattr(src, "read"):
        if hasattr(src, "seek"):
            src.seek(0)
        return src.read(), getattr(src, "name", "the upload")
    raise ExplainerError(f"cannot read an image from {type(src).__name__}")


def load_image(src: Source, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``src`` into a loaded RGB image, or raise ``ExplainerError`` with a one-line reason."""
    data, name = _read(src)
    if not data:
        raise ExplainerError(f"{name}: the file is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))  # reads the header only
            w, h = img.size
            if w <= 0 or h <= 0:
                raise ExplainerError(f"{name}: the image has no pixels")
            if w * h > max_pixels:
                raise ExplainerError(
                    f"{name}: {w}×{h} pixels is more than the {max_pixels:,} allowed (a decompression bomb?)"
                )
            if img.format not in FORMATS:
                raise ExplainerError(f"{name}: {img.format} images are not supported; use PNG, JPEG, WebP, GIF, BMP or TIFF")
            img.seek(0)  # GIF / multi-page TIFF: the first frame
            img.load()  # decodes; truncated or corrupt data fails here
            img = ImageOps.exif_transpose(img)
        except ExplainerError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ExplainerError(f"{name}: the image claims too many pixels (a decompression bomb?)") from None
        except UnidentifiedImageError:
            raise ExplainerError(f"{name}: not an image Pillow can read (PNG, JPEG, WebP, GIF, BMP, TIFF)") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, ZeroDivisionError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "truncated" in reason.lower() or isinstance(e, EOFError):
                reason = "the file is truncated"
            raise ExplainerError(f"{name}: corrupt or truncated image ({reason})") from None
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: alpha composited over white, 16-bit and float scaled by their range."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            scale = 65535.0
        elif mode == "I":
            scale = 65535.0 if arr.max(initial=0) > 255 else 255.0
        else:  # F: floats, by their own range
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr, scale = arr - lo, (hi - lo) or 1.0
        grey = np.clip(np.nan_to_num(arr) / scale * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV: Pillow's own conversions
    return img.convert("RGB")
