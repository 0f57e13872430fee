"""io: decode rates per file format, cache build cost and cached-read speed-up.

Inputs are generated at run time in a temp folder: SIZE x SIZE 12-bit chest phantoms
(medssl.data.phantom) as uncompressed DICOM, transcoded to every lossless compressed transfer
syntax pydicom can encode here (JPEG 2000, RLE, JPEG-LS), PNG 8/16-bit copies and one NIfTI
volume (.nii.gz) holding them as slices. Reported, single process (= per core):
  decode      images/s of medssl.io.read_image per format
  cache build s/image of build_cache (1 worker) vs bare pydicom decode + resize (target <= 1.2x),
              and vs medssl.io.read_image + resize (the cache's own overhead); all-core build rate
  cached read images/s of CachedImages -> float tensor vs decoding the source each time (>= 20x)
"""

from __future__ import annotations

import argparse

#: Targets from the design brief (reported, never asserted).
TARGET_BUILD_VS_BARE = 1.2
TARGET_CACHED_SPEEDUP = 20.0

#: distinct phantoms drawn (the n files per format cycle through them)
DISTINCT = 2

#: phantom transfer-syntax name -> (result key, pydicom uid name)
COMPRESSED = {"jpeg2000-lossless": ("dicom_jpeg2000", "JPEG2000Lossless"),
              "rle": ("dicom_rle", "RLELossless"),
              "jpeg-ls": ("dicom_jpegls", "JPEGLSLossless")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=4, help="images per format (default 4)")
    parser.add_argument("--size", type=int, default=2048, help="source image side in pixels (default 2048)")
    parser.add_argument("--cache-size", type=int, default=256, help="cache image side (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per measurement (median)")
    parser.add_argument("--budget", type=float, default=3.0,
                        help="seconds per measurement after which repeats stop early (>= 1 pass)")
    parser.add_argument("--workers", type=int, default=0, help="processes for the all-core build (0 = all)")


def make_inputs(workdir, n: int, size: int) -> dict:
    """Write the benchmark inputs under workdir; returns {format key: [paths]} (+ "nifti_volume")."""
    import logging
    import shutil
    from pathlib import Path

    import nibabel as nib
    import numpy as np
    import pydicom
    import pydicom.uid
    from PIL import Image as PILImage

    from medssl.data.phantom import available_transfer_syntaxes, write_phantoms

    workdir = Path(workdir)
    # drawing and encoding a 2k phantom costs seconds: make DISTINCT of them, copy them up to n files
    distinct = min(n, DISTINCT)
    truth = write_phantoms(workdir / "phantoms", n_patients=distinct, studies_per_patient=(1, 1),
                           views=("PA",), size=size, bits_stored=12, transfer_syntax="explicit-le", seed=0)
    originals = {"dicom_uncompressed": [workdir / "phantoms" / p for p in truth["path"]]}
    encodable = set(available_transfer_syntaxes())
    logging.getLogger("openjpeg").setLevel(logging.WARNING)   # it logs every tile at INFO
    for syntax, (key, uid_name) in COMPRESSED.items():
        if syntax not in encodable:
            continue
        originals[key] = []
        for i, src in enumerate(originals["dicom_uncompressed"]):
            ds = pydicom.dcmread(src)
            ds.compress(getattr(pydicom.uid, uid_name), generate_instance_uid=False)
            out = workdir / "phantoms" / f"{key}-{i}.dcm"
            ds.save_as(out, enforce_file_format=True)
            originals[key].append(out)
    files: dict[str, list] = {}
    for key, srcs in originals.items():
        (workdir / key).mkdir()
        files[key] = [Path(shutil.copyfile(srcs[i % distinct], workdir / key / f"{i}.dcm")) for i in range(n)]
    sources = files["dicom_uncompressed"]
    stored = [pydicom.dcmread(p).pixel_array.astype(np.uint16) for p in sources]  # 12-bit values
    for key, convert in (("png_8bit", lambda a: (a >> 4).astype(np.uint8)),
                         ("png_16bit", lambda a: (a << 4).astype(np.uint16))):
        (workdir / key).mkdir()
        files[key] = []
        for i, a in enumerate(stored):
            out = workdir / key / f"{i}.png"
            PILImage.fromarray(convert(a)).save(out)
            files[key].append(out)
    volume = np.stack(stored, axis=-1).astype(np.int16)       # (size, size, n): n axial slices
    nib.save(nib.Nifti1Image(volume, np.eye(4)), workdir / "volume.nii.gz")
    files["nifti_volume"] = workdir / "volume.nii.gz"
    return files


def run(args) -> dict:
    import tempfile
    from pathlib import Path

    import numpy as np
    import pandas as pd
    import pydicom

    from medssl import io
    from medssl.bench.common import (cpu_count, format_table, per_second, ratio, time_calls, time_each)
    from medssl.cache import CachedImages, build_cache, decode_row, quantise, resize_pad

    n, size, cache_size, repeats, budget = args.n, args.size, args.cache_size, args.repeats, args.budget
    if n < 1 or size < 8:
        from medssl.errors import ConfigError
        raise ConfigError("bench io needs --n >= 1 and --size >= 8")
    result: dict = {"settings": {"n": n, "size": size, "cache_size": cache_size, "repeats": repeats,
                                 "generator": f"medssl.data.phantom, 12-bit DX MONOCHROME2; {min(n, DISTINCT)} "
                                              "distinct images copied to n files per format"}}
    with tempfile.TemporaryDirectory(prefix="medssl-bench-io-") as tmp:
        tmp = Path(tmp)
        files = make_inputs(tmp / "inputs", n, size)
        volume = files.pop("nifti_volume")

        # -- decode rates (medssl.io.read_image, one process)
        decode = {}
        for key, paths in files.items():
            stats = time_each(lambda p: io.read_image(p), paths, repeats=repeats, budget_s=budget)
            decode[key] = {"images_per_s_per_core": per_second(stats["median_s"]),
                           "mb_per_file": float(np.mean([Path(p).stat().st_size for p in paths]) / 1e6),
                           **stats}
        stats = time_each(lambda k: io.read_image(volume, slice_axis=0, slice_index=k), list(range(n)),
                          repeats=repeats, budget_s=budget)
        decode["nifti_slice"] = {"images_per_s_per_core": per_second(stats["median_s"]),
                                 "mb_per_file": volume.stat().st_size / 1e6 / n, **stats}
        result["decode"] = decode

        # -- cache build vs bare decode + resize (uncompressed DICOM: the cheapest decode, hardest target)
        sources = files["dicom_uncompressed"]
        scale = np.float32(1.0 / 4095)

        def bare(path):
            pixels = pydicom.dcmread(path).pixel_array.astype(np.float32) * scale
            return quantise(resize_pad(pixels, cache_size)[0], "uint8")

        def reader(path):
            return decode_row(str(path), -1, data_root=None, size=cache_size, dtype="uint8", window="voi")

        bare_s = time_each(bare, sources, repeats=repeats, budget_s=budget)["median_s"]
        reader_s = time_each(reader, sources, repeats=repeats, budget_s=budget)["median_s"]
        manifest = pd.DataFrame({"path": [str(p) for p in sources]})
        counter = iter(range(10 ** 6))

        def build(workers: int):
            out = tmp / f"cache-{next(counter)}"
            build_cache(manifest, out, size=cache_size, workers=workers, progress=False)
            return out

        build_s = time_calls(lambda: build(1), repeats=repeats, budget_s=budget)["median_s"] / n
        workers = args.workers or cpu_count()
        all_core_s = time_calls(lambda: build(workers), repeats=1, warmup=0)["median_s"] / n
        result["cache_build"] = {
            "source": "dicom_uncompressed", "cache_size": cache_size, "dtype": "uint8",
            "bare_decode_resize_s_per_image": bare_s,
            "reader_decode_resize_s_per_image": reader_s,
            "build_s_per_image_1_worker": build_s,
            "build_images_per_s_1_worker": per_second(build_s),
            "ratio_build_vs_bare": ratio(build_s, bare_s),
            "ratio_build_vs_reader": ratio(build_s, reader_s),
            "target_ratio_build_vs_bare_max": TARGET_BUILD_VS_BARE,
            "meets_target": ratio(build_s, bare_s) <= TARGET_BUILD_VS_BARE,
            "workers": workers, "build_images_per_s_all_workers": per_second(all_core_s),
        }

        # -- cached read vs decoding the source every time
        cache_dir = build(1)
        images = CachedImages(cache_dir)
        order = np.random.default_rng(0).integers(0, len(images), size=2000)
        cached_s = time_calls(lambda: [images.tensor(int(i)) for i in order], repeats=repeats,
                              budget_s=budget)["median_s"] / len(order)
        result["cached_read"] = {
            "cached_images_per_s": per_second(cached_s), "cached_s_per_image": cached_s,
            "decode_each_time_images_per_s": per_second(reader_s),
            "ratio": ratio(reader_s, cached_s),
            "target_ratio_min": TARGET_CACHED_SPEEDUP, "meets_target": ratio(reader_s, cached_s) >= TARGET_CACHED_SPEEDUP,
            "note": "random item order over a page-cached cache, uint8 -> float32 tensor (1, S, S)",
        }
    print(format_table(_rows(result), ("measurement", "images/s", "ms/image", "note")))
    return result


def _rows(result: dict) -> list[tuple]:
    rows = [(f"decode {k}", v["images_per_s_per_core"], v["median_s"] * 1e3, f"{v['mb_per_file']:.2f} MB/image")
            for k, v in result["decode"].items()]
    b, c = result["cache_build"], result["cached_read"]
    rows += [
        ("bare pydicom decode+resize", 1 / b["bare_decode_resize_s_per_image"],
         b["bare_decode_resize_s_per_image"] * 1e3, "reference"),
        ("medssl.io read+resize", 1 / b["reader_decode_resize_s_per_image"],
         b["reader_decode_resize_s_per_image"] * 1e3, "= decode each time"),
        ("cache build, 1 worker", b["build_images_per_s_1_worker"], b["build_s_per_image_1_worker"] * 1e3,
         f"{b['ratio_build_vs_bare']:.2f}x bare (target <= {b['target_ratio_build_vs_bare_max']}), "
         f"{b['ratio_build_vs_reader']:.2f}x read+resize"),
        (f"cache build, {b['workers']} workers", b["build_images_per_s_all_workers"],
         1e3 / b["build_images_per_s_all_workers"], ""),
        ("cached read -> tensor", c["cached_images_per_s"], c["cached_s_per_image"] * 1e3,
         f"{c['ratio']:.0f}x decode each time (target >= {c['target_ratio_min']:.0f}x)"),
    ]
    return rows
