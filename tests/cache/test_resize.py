import numpy as np
import pytest

from medssl.cache.resize import (content_box, dequantise, fitted_shape, quantise, resize_pad,
                                 to_unit_range)


@pytest.mark.parametrize("shape,size,expected", [
    ((2000, 2500), 256, (205, 256)),   # landscape: width is the long side
    ((3000, 2000), 256, (256, 171)),   # portrait
    ((64, 64), 32, (32, 32)),
    ((10, 1000), 32, (1, 32)),         # extreme aspect keeps at least one pixel
    ((20, 30), 60, (40, 60)),          # upscaling small images
])
def test_fitted_shape_keeps_aspect(shape, size, expected):
    assert fitted_shape(*shape, size) == expected


def test_content_box_is_centred():
    assert content_box(40, 80, 32) == (8, 0, 16, 32)
    assert content_box(81, 27, 27) == (0, 9, 27, 9)


def test_resize_pad_fills_box_and_pads_with_zero():
    canvas, box = resize_pad(np.full((40, 80), 0.75, np.float32), 32)
    top, left, h, w = box
    assert box == (8, 0, 16, 32)
    assert canvas.shape == (32, 32) and canvas.dtype == np.float32
    np.testing.assert_allclose(canvas[top:top + h, left:left + w], 0.75, atol=1e-6)
    assert canvas[:top].max() == 0 and canvas[top + h:].max() == 0


def test_resize_is_antialiased():
    # a 1-px checkerboard shrunk 8x must average to grey, not alias to black/white stripes
    board = (np.indices((256, 256)).sum(axis=0) % 2).astype(np.float32)
    canvas, _ = resize_pad(board, 32)
    assert abs(canvas.mean() - 0.5) < 0.02 and canvas.std() < 0.05


def test_resize_preserves_mean_intensity():
    rng = np.random.default_rng(0)
    img = rng.random((300, 200), dtype=np.float32)
    canvas, (top, left, h, w) = resize_pad(img, 64)
    assert abs(canvas[top:top + h, left:left + w].mean() - img.mean()) < 0.01


def test_quantise_rounds_and_clips():
    x = np.array([-0.2, 0.0, 0.5 / 255 - 1e-4, 0.5 / 255 + 1e-4, 0.5, 1.0, 1.3], np.float32)
    np.testing.assert_array_equal(quantise(x, "uint8"), [0, 0, 0, 1, 128, 255, 255])
    assert quantise(x, "uint16").tolist() == [0, 0, 122, 135, 32768, 65535, 65535]
    with pytest.raises(ValueError):
        quantise(x, "float32")


@pytest.mark.parametrize("dtype,step", [("uint8", 1 / 255), ("uint16", 1 / 65535)])
def test_quantisation_error_is_half_a_step(dtype, step):
    x = np.linspace(0, 1, 10001, dtype=np.float32)
    err = np.abs(dequantise(quantise(x, dtype)) - x).max()
    assert err <= step / 2 + 1e-6


def test_to_unit_range_min_max():
    hu = np.array([[-1000.0, 0.0], [1000.0, 3000.0]], np.float32)
    np.testing.assert_allclose(to_unit_range(hu), [[0.0, 0.25], [0.5, 1.0]])
    assert to_unit_range(np.full((3, 3), 7.0)).max() == 0.0
