"""DICOM reader on pydicom's bundled real files: codecs, LUTs, photometrics, frames, errors."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from medssl.errors import ImageTooLargeError, ReaderError
from medssl.io import META_KEYS, read_header, read_image
from medssl.io.window import apply_window


def _save(ds, path):
    ds.save_as(path, enforce_file_format=False)
    return path


def _modified(pydicom_file, tmp_path, name, out="mod.dcm", **elements):
    ds = pydicom.dcmread(pydicom_file(name))
    for key, value in elements.items():
        setattr(ds, key, value)
    return _save(ds, tmp_path / out)


@pytest.mark.parametrize("variant", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                     "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_expb.dcm",
                                     "MR_small_padded.dcm"])
def test_lossless_encodings_decode_to_identical_pixels(pydicom_file, variant):
    for window in ("none", "voi"):
        ref = read_image(pydicom_file("MR_small.dcm"), window=window).pixels
        got = read_image(pydicom_file(variant), window=window).pixels
        assert got.shape == (64, 64) and got.dtype == np.float32
        np.testing.assert_array_equal(got, ref)
    assert ref.min() >= 0 and ref.max() == 1.0 and ref.std() > 0.05


def test_jpeg2000_reencode_lossless_exact_and_lossy_within_tolerance(pydicom_file, tmp_path):
    from pydicom.uid import JPEG2000, JPEG2000Lossless

    ref = read_image(pydicom_file("CT_small.dcm"), window="none").pixels
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.compress(JPEG2000Lossless)
    np.testing.assert_array_equal(read_image(_save(ds, tmp_path / "j2k.dcm"), window="none").pixels, ref)

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.compress(JPEG2000, j2k_cr=[10])  # 10:1 lossy: errors of a few HU, never structure
    assert len(ds.PixelData) < ref.size * 2 / 5
    lossy = read_image(_save(ds, tmp_path / "j2k_lossy.dcm"), window="none").pixels
    span = float(ref.max() - ref.min())  # ~2063 HU
    err = lossy.astype(np.float64) - ref
    assert 0 < np.sqrt(np.mean(err**2)) < 0.01 * span     # RMSE under 1% of the HU range (~20 HU)
    assert np.abs(err).max() < 0.05 * span
    assert np.corrcoef(lossy.ravel(), ref.ravel())[0, 1] > 0.999


def test_ct_window_none_gives_hounsfield_units(pydicom_file):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    expected = apply_modality_lut(ds.pixel_array, ds)
    img = read_image(pydicom_file("CT_small.dcm"), window="none")
    np.testing.assert_array_equal(img.pixels, expected.astype(np.float32))
    assert img.meta["units"] == "HU" and img.meta["modality"] == "CT"
    assert float(img.pixels.min()) == -896.0 and float(img.pixels.max()) == 1167.0  # slope 1, intercept -1024
    assert (ds.pixel_array.astype(int) - 1024 == img.pixels.astype(int)).all()


def test_explicit_window_string_tuple_and_preset_agree(pydicom_file):
    hu = read_image(pydicom_file("CT_small.dcm"), window="none").pixels.astype(np.float64)
    expected = np.clip((hu - (40 - 200)) / 400, 0, 1)
    for window in ((40, 400), "40,400", "soft-tissue", "SOFT_TISSUE"):
        got = read_image(pydicom_file("CT_small.dcm"), window=window).pixels
        np.testing.assert_allclose(got, expected, atol=1e-6)
    lung = read_image(pydicom_file("CT_small.dcm"), window="lung").pixels
    np.testing.assert_allclose(lung, np.clip((hu + 600 + 750) / 1500, 0, 1), atol=1e-6)
    bone = read_image(pydicom_file("CT_small.dcm"), window="bone").pixels
    assert bone.mean() < lung.mean()  # a higher window makes the same tissue darker


def test_voi_window_matches_pydicom_windowing(pydicom_file):
    # MR_small carries Window Center/Width 600/1600 (LINEAR): pydicom maps into the stored
    # range -32768..32767; normalising that must equal medssl's [0, 1] output.
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ref = (apply_voi_lut(ds.pixel_array, ds) + 32768.0) / 65535.0
    got = read_image(pydicom_file("MR_small.dcm")).pixels
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # a multi-valued window (examples_overlay: centers [450, 200]) uses the first one
    ov = pydicom.dcmread(pydicom_file("examples_overlay.dcm"))
    got = read_image(pydicom_file("examples_overlay.dcm")).pixels
    np.testing.assert_allclose(got, apply_window(ov.pixel_array, 450, 790, "LINEAR"), atol=1e-6)


def test_voi_lut_sequence_is_applied(pydicom_file, tmp_path):
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))  # HU -896..1167 after slope/intercept
    item = Dataset()
    item.add_new(0x00283002, "SS", [2048, -1024, 16])  # LUTDescriptor: 2048 entries from -1024 HU, 16 bits
    lut = np.linspace(65535, 0, 2048).round().astype(np.uint16)  # a falling ramp: easy to recognise
    item.add_new(0x00283006, "US", lut.tolist())  # LUTData
    ds.VOILUTSequence = [item]
    ds.WindowCenter, ds.WindowWidth = 40, 400  # must be ignored in favour of the LUT
    img = read_image(_save(ds, tmp_path / "lut.dcm"))
    hu = apply_modality_lut(ds.pixel_array, ds).astype(int)
    expected = lut[np.clip(hu + 1024, 0, 2047)] / 65535.0
    np.testing.assert_allclose(img.pixels, expected, atol=1e-6)


def test_monochrome1_is_inverted(pydicom_file, tmp_path):
    path = _modified(pydicom_file, tmp_path, "MR_small.dcm", PhotometricInterpretation="MONOCHROME1")
    mono2 = read_image(pydicom_file("MR_small.dcm")).pixels
    mono1 = read_image(path).pixels
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-7)
    assert read_image(path).meta["photometric"] == "MONOCHROME1"
    # window none: reflected inside the declared signed 16-bit range, so bright stays dense
    raw2 = read_image(pydicom_file("MR_small.dcm"), window="none").pixels
    raw1 = read_image(path, window="none").pixels
    np.testing.assert_array_equal(raw1, -32768.0 + 32767.0 - raw2)
    # no VOI in the file: full-range scaling, then inverted
    ds = pydicom.dcmread(path)
    del ds.WindowCenter, ds.WindowWidth
    no_voi = read_image(_save(ds, tmp_path / "m1_novoi.dcm")).pixels
    assert no_voi[raw2 == raw2.max()].max() == 0.0 and no_voi[raw2 == raw2.min()].min() == 1.0


def test_multiframe_frame_selection(pydicom_file):
    full = read_image(pydicom_file("rtdose.dcm"), window="none")
    assert full.shape == (15, 10, 10) and len(full.meta["spacing"]) == 3
    ds = pydicom.dcmread(pydicom_file("rtdose.dcm"))
    np.testing.assert_array_equal(full.pixels, ds.pixel_array.astype(np.float32))
    for k in (0, 7, 14):
        one = read_image(pydicom_file("rtdose.dcm"), frame=k, window="none")
        assert one.shape == (10, 10) and one.meta["spacing"] == (10.0, 10.0)
        np.testing.assert_array_equal(one.pixels, full.pixels[k])
    assert not np.array_equal(full.pixels[0], full.pixels[14])
    np.testing.assert_array_equal(read_image(pydicom_file("rtdose_rle.dcm"), window="none").pixels, full.pixels)
    np.testing.assert_array_equal(read_image(pydicom_file("rtdose_expb.dcm"), frame=3).pixels,
                                  read_image(pydicom_file("rtdose.dcm"), frame=3).pixels)
    with pytest.raises(ReaderError, match="frame 15 out of range"):
        read_image(pydicom_file("rtdose.dcm"), frame=15)
    # slice_index on a multi-frame file picks a frame too
    np.testing.assert_array_equal(read_image(pydicom_file("rtdose.dcm"), slice_index=4, window="none").pixels,
                                  full.pixels[4])


def test_rgb_is_converted_to_luminance_once(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("SC_rgb_rle.dcm"))
    rgb = ds.pixel_array.astype(np.float64)
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    img = read_image(pydicom_file("SC_rgb_rle.dcm"))
    assert img.shape == (100, 100) and img.meta["photometric"] == "RGB"
    np.testing.assert_allclose(img.pixels, expected, atol=1e-6)
    # gray stored as RGB: exactly one channel, no luminance rounding
    ds.decompress()
    gray = ds.pixel_array[..., 1].copy()
    ds.PixelData = np.repeat(gray[..., None], 3, axis=-1).tobytes()
    np.testing.assert_array_equal(read_image(_save(ds, tmp_path / "gray_rgb.dcm"), window="none").pixels, gray)
    # YBR_FULL JPEG decodes to RGB first, then gray
    assert read_image(pydicom_file("SC_rgb_jpeg_dcmtk.dcm")).shape == (100, 100)


def test_palette_color_is_converted_through_its_lut(pydicom_file):
    ds = pydicom.dcmread(pydicom_file("examples_palette.dcm"))
    rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float64)
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 65535.0
    img = read_image(pydicom_file("examples_palette.dcm"))
    assert img.shape == (350, 800) and img.meta["photometric"] == "PALETTE COLOR"
    np.testing.assert_allclose(img.pixels, expected, atol=1e-6)


def test_signed_and_12bit_compressed(pydicom_file):
    img = read_image(pydicom_file("J2K_pixelrep_mismatch.dcm"), window="none")
    assert img.pixels.min() < 0 and img.meta["units"] == "HU"
    ext = read_image(pydicom_file("JPGExtended.dcm"), window="none").pixels  # 12-bit JPEG extended
    assert ext.shape == (1024, 256) and 0 <= ext.min() and ext.max() <= 4095 and ext.max() > 255


def test_meta_from_dicom_tags(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    img = read_image(pydicom_file("CT_small.dcm"))
    assert set(META_KEYS) <= set(img.meta)
    assert img.meta["patient_id"] == ds.PatientID and img.meta["study_id"] == ds.StudyInstanceUID
    assert img.meta["series_id"] == ds.SeriesInstanceUID and img.meta["source_format"] == "dicom"
    assert img.meta["spacing"] == (0.661468, 0.661468) and img.meta["photometric"] == "MONOCHROME2"
    path = _modified(pydicom_file, tmp_path, "MR_small.dcm", ViewPosition="LL", ImagerPixelSpacing=[0.2, 0.25])
    meta = read_image(path).meta
    assert meta["view"] == "LATERAL" and meta["spacing"] == (0.3125, 0.3125)  # PixelSpacing wins
    ds = pydicom.dcmread(path)
    del ds.PixelSpacing
    ds.ViewPosition = "PA"
    meta = read_image(_save(ds, tmp_path / "b.dcm")).meta
    assert meta["view"] == "PA" and meta["spacing"] == (0.2, 0.25)


def test_read_header_skips_pixels(pydicom_file):
    header = read_header(pydicom_file("MR_truncated.dcm"))  # pixels are broken, the header is not
    assert header["shape"] == (64, 64) and header["modality"] == "MR" and set(META_KEYS) <= set(header)
    assert read_header(pydicom_file("rtdose.dcm"))["shape"] == (15, 10, 10)
    assert read_header(pydicom_file("rtplan.dcm"))["shape"] is None


def test_headerless_dicom_and_suffixless_dicom(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ref = read_image(pydicom_file("MR_small.dcm")).pixels
    plain = tmp_path / "plain.dcm"  # no preamble, no file meta (old ACR-NEMA style export)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    pydicom.dcmwrite(plain, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    del_meta = pydicom.dcmread(plain, force=True)
    assert "TransferSyntaxUID" not in getattr(del_meta, "file_meta", {})
    np.testing.assert_array_equal(read_image(plain).pixels, ref)
    nosuffix = tmp_path / "IM0001"
    nosuffix.write_bytes(pydicom_file("MR_small.dcm").read_bytes())
    np.testing.assert_array_equal(read_image(nosuffix).pixels, ref)


# ----------------------------------------------------------------------------- bad inputs
def _assert_names(err, path):
    assert str(path) in str(err.value) and err.value.path == str(path)


def test_truncated_file(pydicom_file):
    with pytest.raises(ReaderError, match="truncated") as err:
        read_image(pydicom_file("MR_truncated.dcm"))
    _assert_names(err, pydicom_file("MR_truncated.dcm"))


def test_no_pixel_data(pydicom_file):
    with pytest.raises(ReaderError, match="no PixelData") as err:
        read_image(pydicom_file("rtplan.dcm"))
    _assert_names(err, pydicom_file("rtplan.dcm"))


def test_bogus_and_unsupported_transfer_syntax(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    path = _save(ds, tmp_path / "bogus_ts.dcm")
    with pytest.raises(ReaderError, match=r"unknown transfer syntax UID '1\.2\.3\.4\.5\.6\.7'") as err:
        read_image(path)
    _assert_names(err, path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no decoder exists
    ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
    with pytest.raises(ReaderError, match=r"1\.2\.840\.10008\.1\.2\.4\.100 \(MPEG2"):
        read_image(_save(ds, tmp_path / "mpeg.dcm"))


def test_missing_codec_names_uid_and_package(pydicom_file, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    with pytest.raises(ReaderError, match=r"1\.2\.840\.10008\.1\.2\.4\.90.*pip install pylibjpeg pylibjpeg-openjpeg"):
        read_image(pydicom_file("MR_small_jp2klossless.dcm"))


def test_corrupt_jpeg_stream(pydicom_file):
    with pytest.raises(ReaderError, match="cannot decode DICOM") as err:
        read_image(pydicom_file("JPEG-lossy.dcm"))  # known-bad 12-bit JPEG stream (misplaced marker)
    _assert_names(err, pydicom_file("JPEG-lossy.dcm"))


def test_absurd_size_refused_before_allocation(pydicom_file, tmp_path, monkeypatch):
    # 65535 x 65535 x 100000 frames would be petabytes: only a refusal before decoding can succeed.
    path = _modified(pydicom_file, tmp_path, "MR_small.dcm", Rows=65535, Columns=65535, NumberOfFrames=100000)
    with pytest.raises(ImageTooLargeError, match="MEDSSL_MAX_PIXELS") as err:
        read_image(path)
    _assert_names(err, path)
    assert read_header(path)["shape"] == (100000, 65535, 65535)
    with pytest.raises(ImageTooLargeError):
        read_image(pydicom_file("MR_small.dcm"), max_pixels=64 * 64 - 1)
    assert read_image(pydicom_file("MR_small.dcm"), max_pixels=64 * 64).shape == (64, 64)
    monkeypatch.setenv("MEDSSL_MAX_PIXELS", "4000")
    with pytest.raises(ImageTooLargeError, match="4,096 pixels"):
        read_image(pydicom_file("MR_small.dcm"))
    # one frame of a multi-frame file is what gets allocated
    monkeypatch.setenv("MEDSSL_MAX_PIXELS", "100")
    assert read_image(pydicom_file("rtdose.dcm"), frame=2).shape == (10, 10)
    with pytest.raises(ImageTooLargeError):
        read_image(pydicom_file("rtdose.dcm"))


def test_not_dicom_and_missing_files(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ReaderError) as err:
        read_image(junk)
    _assert_names(err, junk)
    with pytest.raises(ReaderError, match="no such file"):
        read_image(tmp_path / "missing.dcm")
    with pytest.raises(ReaderError, match="directory"):
        read_image(tmp_path)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(ReaderError, match="unrecognised file type"):
        read_image(txt)


def test_modality_lut_sequence_is_applied(pydicom_file, tmp_path):
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    stored = ds.pixel_array.astype(int)
    item = Dataset()
    first = int(stored.min())
    n = int(stored.max()) - first + 1
    item.add_new(0x00283002, "US", [n, first, 16])  # LUTDescriptor
    lut = (np.arange(n) * 3 % 65536).astype(np.uint16)  # a non-linear (wrapping) map
    item.add_new(0x00283006, "US", lut.tolist())  # LUTData
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = [item]
    got = read_image(_save(ds, tmp_path / "mlut.dcm"), window="none").pixels
    np.testing.assert_array_equal(got, lut[stored - first].astype(np.float32))
