"""Measured cost per item of each stage (``cost_figures.yaml`` beside this file, from docs/cost.md), for
`rim-bench plan` when it cannot measure on this machine (the weights are not there): a run's projected
cost is each stage's figure times the items the run has for it (`rim_bench.core.protocols.Work`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from rim_bench.core.protocols import Work

GB = 1e9


@dataclass(frozen=True)
class FigureSet:
    """One measurement: on `device` (a GPU or not: `gpu`), of the ``pipeline`` kind `method`, at the
    settings `measured_with`; per stage ``{"seconds": per item, "peak_gb": the process's peak}``."""

    device: str
    gpu: bool
    source: str
    method: str
    measured_with: dict[str, Any]
    stages: dict[str, dict[str, float]]

    def differences(self, cfg: DictConfig) -> list[str]:
        """``key=value (measured: other)`` for each measured setting `cfg` does not share."""
        return [f"{key}={OmegaConf.select(cfg, key)} (measured: {value})"
                for key, value in self.measured_with.items() if OmegaConf.select(cfg, key) != value]

    def project(self, work: Work) -> list[dict]:
        """Rows ``stage, seconds (per item), items, projected`` as `rim_bench.commands.plan.project` gives
        them (model loading and any stage `work` does not name: once), ``peak_bytes`` None where not measured."""
        rows = []
        for stage, cost in self.stages.items():
            count = 1 if stage.startswith("load models") else work.items.get(stage, 1)
            seconds, peak = cost["seconds"], cost.get("peak_gb")
            rows.append({"stage": stage, "seconds": seconds, "items": count, "projected": seconds * count,
                         "peak_bytes": int(peak * GB) if peak is not None else None})
        return rows


@functools.cache
def _figures() -> dict[str, Any]:
    return yaml.safe_load(files("rim_bench.run").joinpath("cost_figures.yaml").read_text())


def figure_sets(method: str) -> list[FigureSet]:
    """The measured sets for the ``pipeline`` kind `method` (``regions``, ``pixel``), in the file's order."""
    return [FigureSet(**s) for s in _figures()["sets"] if s["method"] == method]


def val_images(benchmark: str) -> int | None:
    """The benchmark's number of validation images (datasets/README.md); None for one not listed."""
    return _figures()["val_images"].get(benchmark)
