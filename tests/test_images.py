"""Images in: every format and mode people upload; bad files refused in one line."""
from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from explainers.data.images import load_image
from explainers.errors import ExplainerError

RGB = np.zeros((20, 30, 3), np.uint8)
RGB[:, :15] = (200, 30, 40)
RGB[:, 15:] = (10, 220, 90)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _close(a: Image.Image, b: np.ndarray, tol: int) -> bool:
    """Mean absolute difference within ``tol`` (lossy codecs smear the sharp colour edge)."""
    return np.abs(np.asarray(a, np.int32) - b.astype(np.int32)).mean() <= tol


@pytest.mark.parametrize(
    "fmt, mode, tol",
    [("PNG", "RGB", 0), ("PNG", "RGBA", 0), ("PNG", "P", 8), ("PNG", "L", 0), ("JPEG", "RGB", 12), ("JPEG", "L", 12), ("JPEG", "CMYK", 15),
     ("WEBP", "RGB", 12), ("BMP", "RGB", 0), ("TIFF", "RGB", 0), ("GIF", "P", 8), ("TIFF", "CMYK", 2), ("PNG", "LA", 0), ("JPEG", "YCbCr", 12)],
)
def test_formats_and_modes_load_as_rgb(fmt, mode, tol):
    base = Image.fromarray(RGB)
    img = base.convert(mode) if mode not in ("P",) else base.quantize(8)
    out = load_image(_save(img, fmt))
    assert out.mode == "RGB" and out.size == (30, 20)
    ref = np.asarray(img.convert("RGB") if mode not in ("L", "LA") else base.convert("L").convert("RGB"))
    assert _close(out, ref, tol)


def test_alpha_is_composited_over_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent black -> white
    out = np.asarray(load_image(_save(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert (out == 255).all()


def test_16_bit_grey_is_scaled_not_clipped():
    arr = np.array([[0, 65535], [32768, 1000]], np.uint16)
    img16 = Image.fromarray(arr)
    assert img16.mode.startswith("I;16")
    out = np.asarray(load_image(_save(img16, "PNG")))[..., 0]
    assert out[0, 0] == 0 and out[0, 1] == 255 and 120 <= out[1, 0] <= 135
    tif = np.asarray(load_image(_save(img16, "TIFF")))[..., 0]
    assert tif[0, 1] == 255


def test_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = np.asarray(load_image(buf.getvalue()))
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


def test_exif_orientation_is_honoured():
    img = Image.fromarray(RGB)  # 30 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = load_image(_save(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 30)


def test_paths_and_file_objects(tmp_path):
    p = tmp_path / "x.png"
    Image.fromarray(RGB).save(p)
    assert load_image(p).size == (30, 20)
    assert load_image(str(p)).size == (30, 20)
    with open(p, "rb") as f:
        assert load_image(f).size == (30, 20)


def _png_header(width: int, height: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _bad_inputs(tmp_path):
    png = _save(Image.fromarray(RGB), "PNG")
    jpg = _save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    corrupt = bytearray(png)
    idat = corrupt.index(b"IDAT")
    corrupt[idat + 4 : idat + 20] = b"\xff" * 16
    return {
        "empty": b"",
        "random bytes": np.random.default_rng(1).integers(0, 255, 500, dtype=np.uint8).tobytes(),
        "text": b"hello, this is not an image\n" * 10,
        "png cut in half": png[: len(png) // 2],
        "jpeg cut in half": jpg[: len(jpg) // 2],
        "corrupt zlib": bytes(corrupt),
        "missing file": tmp_path / "nope.png",
    }


@pytest.mark.parametrize("name", ["empty", "random bytes", "text", "png cut in half", "jpeg cut in half", "corrupt zlib", "missing file"])
def test_bad_files_are_refused_in_one_line(name, tmp_path):
    src = _bad_inputs(tmp_path)[name]
    with pytest.raises(ExplainerError) as e:
        load_image(src)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_decompression_bomb_is_refused_fast_without_allocating():
    bomb = _png_header(100_000, 100_000)  # claims 10^10 pixels in a few dozen bytes
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(ExplainerError, match="pixels"):
        load_image(bomb)
    elapsed = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 50e6
    # Pillow's process-wide limit is untouched
    assert Image.MAX_IMAGE_PIXELS == 89478485
