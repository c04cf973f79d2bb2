"""Per-image cache of what the test side computes before matching: the region map and the
region features.

The folder is keyed by a hash of the proposer, featurizer and pooling configs
(`CacheLayout.regions_key`) and each entry by the image's pixels (`image_digest`), so
a run that changes only the matcher, the segmenter or the bank reads every image's
regions from disk instead of running SAM and DINOv2 again. Each image is one
safetensors file written atomically; an interrupted run keeps what it finished. An entry
records the settings key and the image id it was made for (`made_for`), so two entries
swapped on disk are recomputed, not used for each other's image.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from rim_bench.core.cache_files import DamagedCacheError, load_tensors, save_tensors
from rim_bench.core.errors import ConfigError
from rim_bench.core.io import file_in, set_aside
from rim_bench.stages.segmenter import NO_REGION


class RegionCache:
    """Reads and writes ``<directory>/<image id>.safetensors``, with a checksum (`rim_bench.core.cache_files`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).expanduser()

    def _path(self, image_id: str) -> Path:
        return file_in(self.directory, image_id, ".safetensors")  # "a/b" and "a_b" get two files

    def made_for(self, image_id: str) -> str:
        """What an entry is for: the settings key (the folder's name, `CacheLayout.regions_key`) and the image."""
        return f"regions {self.directory.name}, image {image_id}"

    def __contains__(self, image_id: str) -> bool:
        return self._path(image_id).is_file()

    def get(self, image_id: str, size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor] | None:
        """``(H, W) int64`` region map and ``(N, D) float32`` features, or None if not cached;
        a damaged entry (see `_read`; a map whose size is not the image's ``(H, W)`` = `size`,
        when given) is set aside, with a warning."""
        path = self._path(image_id)
        if not path.is_file():
            return None
        try:
            return _read(path, size, self.made_for(image_id))
        except DamagedCacheError as e:
            set_aside(path, e)
            return None

    def put(self, image_id: str, region_map: Tensor, features: Tensor) -> None:
        try:
            save_tensors(self._path(image_id), {"region_map": region_map.to(torch.int32), "features": features.float()},
                         made_for=self.made_for(image_id))
        except OSError as e:  # a read-only or full cache folder
            raise ConfigError(f"cache_dir: cannot write the region cache '{self.directory}' ({e.strerror or e}): "
                              "make it writable, or set cache_regions=false") from None


def _read(path: Path, size: tuple[int, int] | None, made_for: str) -> tuple[Tensor, Tensor]:
    """An entry, checked: its checksum, the key it was `made_for`, finite features, a region map
    of the image's size whose values are region indices (0..N-1) or `NO_REGION`.

    Raises:
        DamagedCacheError: naming the file and what is wrong.
    """
    tensors, _ = load_tensors(path, made_for=made_for)
    region_map, features = tensors.get("region_map"), tensors.get("features")
    if region_map is None or region_map.ndim != 2 or features is None or features.ndim != 2:
        raise DamagedCacheError(f"cached regions '{path}' lack an (H, W) region map or an (N, D) feature matrix")
    if size is not None and tuple(region_map.shape) != tuple(size):
        raise DamagedCacheError(f"cached region map '{path}' is {tuple(region_map.shape)}, the image {tuple(size)}")
    if region_map.numel() and (region_map.min() < NO_REGION or region_map.max() >= len(features)):
        raise DamagedCacheError(f"cached region map '{path}' holds values {region_map.min()}..{region_map.max()} "
                                f"for {len(features)} regions")
    return region_map.long(), features
