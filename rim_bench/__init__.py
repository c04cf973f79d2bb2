"""rim-bench: benchmarking training-free open-vocabulary semantic segmentation, built around RIM.

The public surface, stable across releases (CHANGELOG.md lists what moved):
``from rim_bench import RIM`` (the Python API, `rim_bench.commands.api`), ``RIMModule`` (the
LightningModule, `rim_bench.run.lit_module`) and ``BenchmarkDataModule`` (`rim_bench.run.datamodule`).
Each loads torch and the stages on first use, so ``import rim_bench`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
# Each public name → the module that defines it, imported on first use.
_HOMES = {
    "RIM": "rim_bench.commands.api",
    "SegmentationResult": "rim_bench.commands.api",
    "RIMModule": "rim_bench.run.lit_module",
    "BenchmarkDataModule": "rim_bench.run.datamodule",
}
__all__ = ["RIM", "SegmentationResult", "RIMModule", "BenchmarkDataModule"]  # = _HOMES's keys

if TYPE_CHECKING:
    from rim_bench.commands.api import RIM, SegmentationResult
    from rim_bench.run.datamodule import BenchmarkDataModule
    from rim_bench.run.lit_module import RIMModule


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'rim_bench' has no attribute {name!r}")
