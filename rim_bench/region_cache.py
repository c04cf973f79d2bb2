"""Per-image cache of what the test side computes before matching: the region map and the
region features.

Keyed by a hash of the data set and of the proposer, featurizer and pooling configs, so
a run that changes only the matcher, the segmenter or the bank reads every image's
regions from disk instead of running SAM and DINOv2 again. Each image is one
safetensors file written atomically; an interrupted run keeps what it finished.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from rim_bench.errors import ConfigError
from rim_bench.io import atomic_path, file_in, set_aside


class RegionCache:
    """Reads and writes ``<directory>/<image id>.safetensors``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).expanduser()

    def _path(self, image_id: str) -> Path:
        return file_in(self.directory, image_id, ".safetensors")  # "a/b" and "a_b" get two files

    def __contains__(self, image_id: str) -> bool:
        return self._path(image_id).is_file()

    def get(self, image_id: str) -> tuple[Tensor, Tensor] | None:
        """``(H, W) int64`` region map and ``(N, D) float32`` features, or None if not cached."""
        path = self._path(image_id)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor("region_map").long(), f.get_tensor("features")
        except Exception as e:  # safetensors raises its own error types for damaged files
            set_aside(path, e)
            return None

    def put(self, image_id: str, region_map: Tensor, features: Tensor) -> None:
        try:
            with atomic_path(self._path(image_id)) as tmp:
                save_file({"region_map": region_map.to(torch.int32).contiguous().cpu(),
                           "features": features.float().contiguous().cpu()}, str(tmp))
        except OSError as e:  # a read-only or full cache folder
            raise ConfigError(f"cache_dir: cannot write the region cache '{self.directory}' ({e.strerror or e}): "
                              "make it writable, or set cache_regions=false") from None
