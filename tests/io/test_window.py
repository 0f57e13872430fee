"""Window parsing, presets, scaling and size limits."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.errors import ConfigError, ImageTooLargeError, ReaderError
from medssl.io.limits import DEFAULT_MAX_PIXELS, check_declared_size, resolve_max_pixels
from medssl.io.window import PRESETS, apply_window, parse_window, scale_full_range, to_grayscale


def test_parse_window():
    assert parse_window(None) == "voi" and parse_window(" VOI ") == "voi" and parse_window("none") == "none"
    assert parse_window("-600,1500") == (-600.0, 1500.0) == parse_window("lung") == parse_window([-600, 1500])
    assert parse_window("Soft_Tissue") == PRESETS["soft-tissue"] == (40.0, 400.0)
    for bad in ("liver", "1,2,3", "a,b", (40, 0), (40, -5), "nan,100"):
        with pytest.raises(ConfigError):
            parse_window(bad)


def test_apply_window_linear_exact_and_dicom_linear():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    np.testing.assert_allclose(apply_window(hu, 40, 400), [0, 0, 0.5, 1, 1], atol=1e-7)
    # DICOM LINEAR (PS3.3 C.11.2.1.2): (x - (c - 0.5)) / (w - 1) + 0.5
    x = np.array([30.0, 40.0, 50.0])
    np.testing.assert_allclose(apply_window(x, 40, 101, "LINEAR"), (x - 39.5) / 100 + 0.5, atol=1e-6)
    assert apply_window(hu, 40, 400).dtype == np.float32


def test_scaling_and_grayscale():
    np.testing.assert_array_equal(scale_full_range(np.array([2.0, 4.0, 6.0])), [0, 0.5, 1])
    assert (scale_full_range(np.full((3, 3), 7.0)) == 0).all()
    same = np.stack([np.arange(4.0)] * 3, axis=-1)
    np.testing.assert_array_equal(to_grayscale(same), np.arange(4.0))
    np.testing.assert_allclose(to_grayscale(np.array([[255, 0, 0]])), [0.299 * 255])


def test_limits(monkeypatch):
    monkeypatch.delenv("MEDSSL_MAX_PIXELS", raising=False)
    assert resolve_max_pixels() == DEFAULT_MAX_PIXELS == 2**28 and resolve_max_pixels(10) == 10
    monkeypatch.setenv("MEDSSL_MAX_PIXELS", "1e6")
    assert resolve_max_pixels() == 1_000_000
    assert check_declared_size("x.dcm", (1000, 1000)) == 1_000_000
    with pytest.raises(ImageTooLargeError, match="x.dcm"):
        check_declared_size("x.dcm", (1000, 1001))
    with pytest.raises(ReaderError, match="dimensions"):
        check_declared_size("x.dcm", (0, 10))
    monkeypatch.setenv("MEDSSL_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="MEDSSL_MAX_PIXELS"):
        resolve_max_pixels()
