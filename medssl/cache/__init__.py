"""The decoded cache: decode each image once into fixed-size uint8/uint16 shards, read by memmap.

`build_cache(manifest, cache_dir, ...)` writes it (parallel, resumable, atomic shards);
`CachedImages(cache_dir, manifest)` / `open_cache(...)` read it. Layout: `medssl.cache.meta`.
"""

from medssl.cache.build import CacheInfo, build_cache, cache_info, decode_row
from medssl.cache.dataset import CachedImages, TensorView, load_index, open_cache, to_tensor
from medssl.cache.resize import content_box, dequantise, fitted_shape, quantise, resize_pad

__all__ = [
    "CacheInfo", "CachedImages", "TensorView", "build_cache", "cache_info", "content_box", "decode_row",
    "dequantise", "fitted_shape", "load_index", "open_cache", "quantise", "resize_pad", "to_tensor",
]
