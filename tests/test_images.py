"""Images in: every format and mode people upload; bad files refused in one line."""
from __future__ import annotations

import io
import struct
import time
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from explainers.data.images import load_image, to_rgb
from explainers.errors import ExplainerError

RED, GREEN = (200, 30, 40), (10, 220, 90)
RGB = np.zeros((20, 30, 3), np.uint8)  # 30 wide, 20 high: red left half, green right half
RGB[:, :15] = RED
RGB[:, 15:] = GREEN


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _mad(a: Image.Image, b: np.ndarray) -> float:
    """Mean absolute difference (lossy codecs smear the sharp colour edge)."""
    return float(np.abs(np.asarray(a, np.int32) - b.astype(np.int32)).mean())


def _grey_ref() -> np.ndarray:
    return np.asarray(Image.fromarray(RGB).convert("L").convert("RGB"))


# (format, how to make the image from the RGB picture, expected RGB, tolerance)
CASES = {
    "png-rgb": ("PNG", lambda b: b, lambda: RGB, 0),
    "png-rgba-opaque": ("PNG", lambda b: b.convert("RGBA"), lambda: RGB, 0),
    "png-la": ("PNG", lambda b: b.convert("LA"), _grey_ref, 0),
    "png-p": ("PNG", lambda b: b.quantize(8), lambda: RGB, 8),
    "png-l": ("PNG", lambda b: b.convert("L"), _grey_ref, 0),
    "png-1": ("PNG", lambda b: b.convert("L").point(lambda v: 255 if v > 100 else 0).convert("1"), None, 0),
    "jpeg-rgb": ("JPEG", lambda b: b, lambda: RGB, 12),
    "jpeg-l": ("JPEG", lambda b: b.convert("L"), _grey_ref, 12),
    "jpeg-cmyk": ("JPEG", lambda b: b.convert("CMYK"), lambda: RGB, 15),
    "jpeg-ycbcr": ("JPEG", lambda b: b.convert("YCbCr"), lambda: RGB, 12),
    "webp-rgb": ("WEBP", lambda b: b, lambda: RGB, 12),
    "webp-rgba": ("WEBP", lambda b: b.convert("RGBA"), lambda: RGB, 12),
    "gif-p": ("GIF", lambda b: b.quantize(8), lambda: RGB, 8),
    "bmp-rgb": ("BMP", lambda b: b, lambda: RGB, 0),
    "bmp-l": ("BMP", lambda b: b.convert("L"), _grey_ref, 0),
    "tiff-rgb": ("TIFF", lambda b: b, lambda: RGB, 0),
    "tiff-cmyk": ("TIFF", lambda b: b.convert("CMYK"), lambda: RGB, 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_formats_and_modes_load_as_rgb(case, tmp_path):
    fmt, make, ref, tol = CASES[case]
    img = make(Image.fromarray(RGB))
    path = tmp_path / f"{case}.{fmt.lower()}"
    img.save(path, format=fmt)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (30, 20)
    expected = ref() if ref is not None else np.asarray(img.convert("RGB"))
    assert _mad(out, expected) <= tol, case


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    rgba[0, 0] = (255, 0, 0, 255)  # one opaque red pixel
    for fmt in ("PNG", "WEBP"):
        out = np.asarray(load_image(_save(Image.fromarray(rgba, "RGBA"), fmt, **({"lossless": True} if fmt == "WEBP" else {}))))
        assert (out[1:] == 255).all() and tuple(out[0, 0]) == (255, 0, 0), fmt
    # palette image with a transparent index (PNG tRNS / GIF transparency)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    for fmt in ("PNG", "GIF"):
        out = np.asarray(load_image(_save(pal, fmt, transparency=1)))
        assert (out[1:] == 255).all() and tuple(out[0, 0]) == (0, 0, 0), fmt
    # half-transparent red over white -> pink
    la = np.asarray(load_image(_save(Image.new("RGBA", (2, 2), (255, 0, 0, 128)), "PNG")))
    assert la[0, 0, 0] == 255 and 120 <= la[0, 0, 1] <= 135


def test_16_bit_grey_is_scaled_by_the_type_range_not_clipped(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], np.uint16)
    img16 = Image.fromarray(arr)
    assert img16.mode.startswith("I;16")
    for fmt in ("PNG", "TIFF", "PPM"):  # a 16-bit PGM opens as mode "I"
        path = tmp_path / f"g16.{fmt.lower()}"
        img16.save(path, format=fmt)
        out = np.asarray(load_image(path))
        assert out.shape == (2, 2, 3) and (out[..., 0] == out[..., 2]).all()
        g = out[..., 0]
        assert g[0, 0] == 0 and g[0, 1] == 255 and g[1, 0] == 128 and g[1, 1] == 4, fmt
    # a dark 16-bit image stays dark (scaled by 65535, not by its own maximum)
    dark = np.asarray(load_image(_save(Image.fromarray(np.full((2, 2), 2570, np.uint16)), "PNG")))
    assert (dark == 10).all()


def test_float_and_32_bit_modes():
    f01 = Image.fromarray(np.array([[0.0, 1.0], [0.5, np.nan]], np.float32))
    assert f01.mode == "F"
    g = np.asarray(to_rgb(f01))[..., 0]
    assert g[0, 0] == 0 and g[0, 1] == 255 and g[1, 0] == 128
    wide = Image.fromarray(np.array([[-5.0, 5.0]], np.float32))
    assert list(np.asarray(to_rgb(wide))[0, :, 0]) == [0, 255]
    i32 = Image.fromarray(np.array([[0, 200_000]], np.int32))
    assert i32.mode == "I" and list(np.asarray(to_rgb(i32))[0, :, 0]) == [0, 255]
    f_tiff = load_image(_save(f01, "TIFF"))
    assert f_tiff.mode == "RGB" and np.asarray(f_tiff)[0, 1, 0] == 255


def test_other_modes_convert():
    assert to_rgb(Image.new("LAB", (2, 2), (255, 128, 128))).getpixel((0, 0))[0] >= 250  # L*=100: white
    assert to_rgb(Image.new("HSV", (2, 2), (0, 255, 255))).getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(Image.new("1", (2, 2), 1)).getpixel((0, 0)) == (255, 255, 255)
    img = Image.new("RGB", (2, 2))
    assert to_rgb(img) is img


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(path).n_frames == 3
    out = np.asarray(load_image(path))
    assert out.shape == (8, 8, 3) and (out[..., 0] > 200).all() and (out[..., 1:] < 50).all()
    webp = tmp_path / "anim.webp"
    frames[0].save(webp, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    out = np.asarray(load_image(webp))
    assert (out[..., 0] > 200).all() and (out[..., 2] < 50).all()


def test_exif_orientation_is_honoured(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90° clockwise
    path = tmp_path / "phone.jpg"
    Image.fromarray(RGB).save(path, format="JPEG", exif=exif.tobytes(), quality=95)
    out = np.asarray(load_image(path), np.int32)
    assert out.shape == (30, 20, 3)  # 20 wide, 30 high now
    # rotating clockwise puts the left (red) half on top, the right (green) half at the bottom
    assert np.abs(out[:12] - RED).mean() < 12 and np.abs(out[-12:] - GREEN).mean() < 12
    exif[0x0112] = 3  # 180°: red on the right
    out = np.asarray(load_image(_save(Image.fromarray(RGB), "JPEG", exif=exif.tobytes(), quality=95)), np.int32)
    assert out.shape == (20, 30, 3) and np.abs(out[:, -12:] - RED).mean() < 12


def test_sources_path_bytes_and_file_objects(tmp_path):
    p = tmp_path / "x.png"
    Image.fromarray(RGB).save(p)
    data = p.read_bytes()
    assert load_image(p).size == (30, 20)
    assert load_image(str(p)).size == (30, 20)
    assert load_image(bytearray(data)).size == (30, 20)
    assert load_image(memoryview(data)).size == (30, 20)
    with open(p, "rb") as f:
        f.read(10)  # a half-read upload is rewound
        assert load_image(f).size == (30, 20)
    out = load_image(data)
    assert np.array_equal(np.asarray(out), RGB)
    with open(p, "r", encoding="latin-1") as f, pytest.raises(ExplainerError, match="binary"):
        load_image(f)
    with pytest.raises(ExplainerError, match="not a file"):
        load_image(tmp_path)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")


def _bad_inputs(tmp_path):
    png = _save(Image.fromarray(RGB), "PNG")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    jpg = _save(Image.fromarray(noise), "JPEG")
    # a valid PNG whose IDAT holds a broken zlib stream (CRC fixed, so only the inflate fails)
    ihdr = struct.pack(">IIBBBBB", 30, 20, 8, 2, 0, 0, 0)
    bad_zlib = b"\x78\x9c" + b"\xff\xfe\xfd\xfc" * 16
    corrupt_zlib = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bad_zlib) + _chunk(b"IEND", b"")
    text = tmp_path / "notes.png"
    text.write_text("hello, this is not an image\n" * 10)
    return {
        "empty": b"",
        "empty file": (tmp_path / "empty.png", b""),
        "random bytes": np.random.default_rng(1).integers(0, 255, 500, dtype=np.uint8).tobytes(),
        "text file": text,
        "png cut in half": png[: len(png) // 2],
        "jpeg cut in half": jpg[: len(jpg) // 2],
        "corrupt zlib": corrupt_zlib,
        "png with a bad crc": png[:29] + bytes([png[29] ^ 0xFF]) + png[30:],  # the IHDR checksum
        "missing file": tmp_path / "nope.png",
        "unsupported format": _save(Image.fromarray(RGB), "PCX"),
        "not a source": 12345,
    }


BAD = ["empty", "empty file", "random bytes", "text file", "png cut in half", "jpeg cut in half", "corrupt zlib",
       "png with a bad crc", "missing file", "unsupported format", "not a source"]


@pytest.mark.parametrize("name", BAD)
def test_bad_files_are_refused_in_one_line(name, tmp_path):
    src = _bad_inputs(tmp_path)[name]
    if isinstance(src, tuple):
        src[0].write_bytes(src[1])
        src = src[0]
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ExplainerError) as e:
            load_image(src)
    msg = str(e.value)
    assert msg and "\n" not in msg and len(msg) < 300 and "Traceback" not in msg
    assert e.value.__suppress_context__ or e.value.__context__ is None  # no chained Pillow traceback
    assert not [w for w in caught if "PIL" in (w.filename or "")], [str(w.message) for w in caught]
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def test_truncated_file_messages_say_so(tmp_path):
    png = _save(Image.fromarray(RGB), "PNG")
    with pytest.raises(ExplainerError, match="truncated"):
        load_image(png[: len(png) // 2])


@pytest.mark.parametrize("size", [(100_000, 100_000), (10_000, 10_000), (8_000, 8_000)])
def test_decompression_bomb_is_refused_fast_without_allocating(size):
    """10^10 pixels (Pillow's bomb error), 10^8 (Pillow's bomb warning), 6.4e7 (only our 5e7 limit)."""
    bomb = _png_header(*size)  # claims the size in a few dozen bytes
    assert len(bomb) < 200
    before = Image.MAX_IMAGE_PIXELS
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(ExplainerError, match="pixels") as e:
            load_image(bomb)
        elapsed = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "\n" not in str(e.value)
    assert elapsed < 1.0 and peak < 50e6
    assert Image.MAX_IMAGE_PIXELS == before  # Pillow's process-wide limit is untouched


def test_gif_bomb_and_max_pixels_argument():
    # GIF logical screen 65535 x 65535 with a one-pixel frame
    gif = b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00\x02\x02\x44\x01\x00\x3b"
    t = time.perf_counter()
    with pytest.raises(ExplainerError, match="pixels"):
        load_image(gif)
    assert time.perf_counter() - t < 1.0
    small = _save(Image.fromarray(RGB), "PNG")
    with pytest.raises(ExplainerError, match="500 allowed"):
        load_image(small, max_pixels=500)  # 30 x 20 = 600 pixels
    assert load_image(small, max_pixels=600).size == (30, 20)
