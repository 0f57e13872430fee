"""PNG/JPEG reader on the real Kermany JPEGs and PNGs made from them."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage

from medssl.errors import ImageTooLargeError, ReaderError
from medssl.io import read_header, read_image


@pytest.fixture(scope="module")
def kermany_jpegs(shared_data):
    files = sorted((shared_data / "real" / "kermany_pediatric" / "images").rglob("*.jpeg"))[:4]
    assert len(files) == 4
    return files


def test_real_rgb_jpeg_becomes_gray_once(kermany_jpegs):
    for path in kermany_jpegs:
        rgb = np.asarray(PILImage.open(path).convert("RGB")).astype(np.float64)
        img = read_image(path)
        assert img.shape == rgb.shape[:2] and img.pixels.dtype == np.float32
        assert img.meta["source_format"] == "jpeg" and img.meta["units"] == "unit"
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
            expected = rgb[..., 0]  # gray encoded as RGB: one channel, exactly
        else:
            expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        np.testing.assert_allclose(img.pixels, expected / 255.0, atol=1e-6)
        np.testing.assert_allclose(read_image(path, window="none").pixels, expected, atol=1e-4)
        assert read_header(path)["shape"] == img.shape


def test_png_8_and_16_bit_keep_their_depth(kermany_jpegs, tmp_path):
    gray8 = np.asarray(PILImage.open(kermany_jpegs[0]).convert("L"))
    PILImage.fromarray(gray8).save(tmp_path / "g8.png")
    img8 = read_image(tmp_path / "g8.png")
    np.testing.assert_allclose(img8.pixels, gray8 / 255.0, atol=1e-7)
    assert img8.meta["photometric"] == "MONOCHROME2" and img8.meta["source_format"] == "png"
    # 16-bit: 12-bit-like detail that an 8-bit path would destroy
    gray16 = (gray8.astype(np.uint16) * 257 + np.arange(gray8.size, dtype=np.uint16).reshape(gray8.shape) % 200)
    PILImage.fromarray(gray16).save(tmp_path / "g16.png")
    assert PILImage.open(tmp_path / "g16.png").mode.startswith("I")
    img16 = read_image(tmp_path / "g16.png")
    np.testing.assert_allclose(img16.pixels, gray16 / 65535.0, atol=1e-7)
    assert len(np.unique(img16.pixels)) > 256
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png", window="none").pixels, gray16)
    np.testing.assert_allclose(read_image(tmp_path / "g16.png", window=(32768, 65536)).pixels,
                               np.clip(gray16 / 65536.0, 0, 1), atol=1e-6)


def test_colour_png_uses_luminance(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    PILImage.fromarray(rgb).save(tmp_path / "c.png")
    img = read_image(tmp_path / "c.png", window="none")
    np.testing.assert_allclose(img.pixels, 0.299 * 200 + 0.587 * 100 + 0.114 * 50, atol=1e-4)
    assert img.meta["photometric"] == "RGB"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_bad_and_oversized_pngs(kermany_jpegs, tmp_path):
    PILImage.fromarray(np.asarray(PILImage.open(kermany_jpegs[0]).convert("L"))).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReaderError, match="cut.png.*truncated"):
        read_image(tmp_path / "cut.png")
    jpeg = kermany_jpegs[0].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    with pytest.raises(ReaderError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "junk.png").write_bytes(b"not a png at all" * 10)
    with pytest.raises(ReaderError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    # a valid 60000 x 60000 16-bit header followed by a few bytes of data: refused from the header
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 16, 0, 0, 0, 0)
    huge = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) \
        + _png_chunk(b"IEND", b"")
    (tmp_path / "huge.png").write_bytes(huge)
    with pytest.raises(ImageTooLargeError, match="huge.png"):
        read_image(tmp_path / "huge.png")
    assert read_header(tmp_path / "huge.png")["shape"] == (60000, 60000)
    with pytest.raises(ImageTooLargeError, match="ok.png"):
        read_image(tmp_path / "ok.png", max_pixels=100)
    with pytest.raises(ReaderError, match="frame"):
        read_image(tmp_path / "ok.png", frame=2)
