"""The config keys outside the stage blocks, declared as the stages declare theirs: annotated fields
(`rim_bench.core.params`), one block a dataclass. The config checks read them with the stages'
declarations, so every key answers in one message style; configs/default.yaml repeats them for
reading, and a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Literal

from rim_bench.core.params import Param, Range, declared


@dataclass(frozen=True)
class WandbSettings:
    project: str = "rim-bench"
    group: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"


@dataclass(frozen=True)
class DataSettings:
    name: str = "voc_layout"
    root: str | None = None
    generate: bool = False
    split: str = "val"
    classes: str | None = None
    max_images: Annotated[int, Range(1)] | None = None
    skip_bad: bool = False
    batch_size: Annotated[int, Range(1)] = 1
    num_workers: Annotated[int, Range(0)] = 0


@dataclass(frozen=True)
class TrainerSettings:
    """The Trainer arguments default.yaml names; any other lightning.Trainer argument may be given too."""

    accelerator: str = "auto"
    devices: Annotated[int, Range(1)] | Literal[-1] = 1  # -1: every device (Lightning's)
    num_nodes: Annotated[int, Range(1)] = 1
    strategy: str = "auto"
    precision: str | int | None = None  # null: 32-true, a peer method's own (float16 on CUDA); 16, "16-mixed", ...


@dataclass(frozen=True)
class RunSettings:
    """The top-level keys (configs/default.yaml says what each does)."""

    experiment: str | None = None
    method: str | None = None
    protocol: str | None = None
    pipeline: str = "regions"
    seed: Annotated[int, Range(0, 2**32 - 1)] = 0
    output_dir: str | None = None
    cache_dir: str = "${oc.env:RIM_BENCH_CACHE,'~/.cache/rim-bench'}"
    save_predictions: bool = False
    save_overlays: Annotated[int, Range(0)] = 0
    cache_regions: bool = True
    logger: Literal["csv", "wandb", "tensorboard"] = "csv"


# Each block outside the stages, by its key prefix.
BLOCKS = {"": RunSettings, "wandb.": WandbSettings, "data.": DataSettings, "trainer.": TrainerSettings}


@cache
def run_declarations() -> dict[str, Param]:
    """Every key outside the stage blocks by dotted key (``data.max_images``)."""
    return {prefix + name: param for prefix, block in BLOCKS.items() for name, param in declared(block).items()}
