"""rim-bench: benchmarking training-free open-vocabulary semantic segmentation, built around RIM.

``from rim_bench import RIM`` is the Python API (`rim_bench.commands.api`); it loads torch and the
stages on first use, so ``import rim_bench`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RIM", "SegmentationResult"]

if TYPE_CHECKING:
    from rim_bench.commands.api import RIM, SegmentationResult


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rim_bench.commands import api

        return getattr(api, name)
    raise AttributeError(f"module 'rim_bench' has no attribute {name!r}")
