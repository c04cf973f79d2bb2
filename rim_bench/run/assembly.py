"""One config → its stages and its reference bank: the one assembly path.

`RIMModule.setup` (so `rim-bench test`, a LightningCLI run and a user's own
``Trainer.test``), the Python API's `RIM` (so `rim-bench segment`), `rim-bench build-bank`,
the tests and the benchmarks all build through `Assembly`: a stage or a bank is put
together in one place, under one cache layout.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from rim_bench.core.cache_layout import CacheLayout
from rim_bench.core.config import as_overrides, load_config, resolve
from rim_bench.core.errors import ConfigError
from rim_bench.core.protocols import DenseFeaturizer, Method, RegionEncoder, Segmenter
from rim_bench.core.registry import ENCODERS, FEATURIZERS, MATCHERS, PROPOSERS, SEGMENTERS, build_stage
from rim_bench.core.seed import seed_everything
from rim_bench.core.timing import StageTimer
from rim_bench.core.types import ReferenceBank
from rim_bench.run.pipeline import SegmentationPipeline
from rim_bench.run.region_cache import RegionCache


@dataclass
class BankBuild:
    """A bank, its cache folder, and whether it came from the cache."""

    bank: ReferenceBank
    path: Path
    cached: bool


class Assembly:
    """Builds the stages and banks of one config, each model once.

    Args:
        cfg: a full config (`load_config`, or `experiment_config`); a resolved copy is kept
            as ``.cfg``, checked, read-only, and with every random draw seeded from it. A config
            `prepare` returned (read-only) is kept as it is: a run prepares its config once.
        timer: per-stage seconds, shared by the stages it builds.
    """

    def __init__(self, cfg: DictConfig, timer: StageTimer | None = None) -> None:
        self.cfg = cfg if OmegaConf.is_readonly(cfg) else prepare(cfg)
        self.timer = timer or StageTimer()
        self._featurizer: DenseFeaturizer | None = None
        self._encoder: RegionEncoder | None = None

    @property
    def featurizer(self) -> DenseFeaturizer:
        """The dense featurizer (loaded on first use; shared by the pipeline and bank builds)."""
        if self._featurizer is None:
            self._featurizer = build_stage(FEATURIZERS, self.cfg.featurizer, "featurizer")
        return self._featurizer

    @property
    def encoder(self) -> RegionEncoder:
        if self._encoder is None:
            self._encoder = build_stage(ENCODERS, self.cfg.pooling, "pooling")
        return self._encoder

    def segmenter(self, class_names: list[str]) -> Segmenter:
        """The segmenter for a vocabulary (its background rule needs the id of "background")."""
        background = class_names.index("background") if "background" in class_names else None
        return build_stage(SEGMENTERS, self.cfg.segmenter, "segmenter", background_id=background)

    def method(self) -> Method:
        """The method ``pipeline`` selects (`rim_bench.run.methods`), over this assembly's stages."""
        from rim_bench.run.methods import method_class

        return method_class(self.cfg)(self)

    def pipeline(self, class_names: list[str] | None = None) -> SegmentationPipeline:
        """Every stage of the config, without a bank (`bank` makes one).

        `class_names` is the vocabulary the segmenter needs; None leaves the segmenter to be
        set once the vocabulary is known. The region cache (``cache_regions``) is keyed by the
        test side's config, and its entries by image content, so `rim-bench test`,
        `rim-bench segment` and the API share it. `method` puts it behind the method seam.
        """
        # Cheap stages first, so a config mistake in them shows before model weights load.
        matcher = build_stage(MATCHERS, self.cfg.matcher, "matcher")
        segmenter = self.segmenter(class_names) if class_names is not None else None
        encoder = self.encoder
        proposer = build_stage(PROPOSERS, self.cfg.proposer, "proposer")
        cache = None
        if self.cfg.cache_regions:
            cache = RegionCache(CacheLayout.of(self.cfg).regions_dir())
        return SegmentationPipeline(proposer, self.featurizer, encoder, matcher, segmenter, self.timer, cache)

    def bank(self, classes: list[list[str]], device: torch.device | str = "cpu", rank: int = 0,
             world_size: int = 1, barrier: Callable[[], None] = lambda: None, wait: bool = False,
             cfg: DictConfig | None = None) -> BankBuild:
        """Load the bank for `classes` from the cache, or build (this process's share of) it.

        Args:
            classes: the vocabulary, ``[[name, synonym, ...], ...]`` in label-id order.
            device: where generative models and the featurizer run while building.
            rank, world_size, barrier: a build shared by several processes (`rim-bench build-bank`).
            wait: build nothing; wait for another process (rank 0) to publish the bank.
            cfg: this config with other reference settings (the API's subcategory table).
        """
        from rim_bench.stages.references.sources import bank_for_config

        featurizer = self.featurizer
        if isinstance(featurizer, torch.nn.Module):  # the pipeline's featurizer too: it stays where it is built
            featurizer.to(device)
        bank, path, hit = bank_for_config(cfg or self.cfg, featurizer, self.encoder, classes, torch.device(device),
                                          self.timer, rank=rank, world_size=world_size, barrier=barrier, wait=wait)
        return BankBuild(bank, path, hit)


def experiment_config(config: str | Path | DictConfig = "smoke", overrides: dict[str, Any] | None = None) -> DictConfig:
    """A full config from an experiment name (``configs/experiment/``), a YAML path or a config,
    with ``{dotted.key: value}`` overrides (``matcher__rim__temperature`` works too)."""
    dotted = as_overrides({key.replace("__", "."): value for key, value in (overrides or {}).items()})
    if not isinstance(config, DictConfig):
        return load_config([f"experiment={config}", *dotted])
    if not dotted:
        return config
    merged = config.copy()
    OmegaConf.set_readonly(merged, False)  # a prepared config, changed: prepared again
    OmegaConf.set_struct(merged, True)
    try:
        return cast(DictConfig, OmegaConf.merge(merged, OmegaConf.from_dotlist(dotted)))
    except Exception as e:
        raise ConfigError(f"cannot apply {dotted}: {str(e).splitlines()[0]}") from None


def prepare(cfg: DictConfig) -> DictConfig:
    """Resolve a copy of `cfg`, check its cache folder, and seed everything; the copy is
    read-only (what a run decides later, it keeps beside it)."""
    from rim_bench.core.threads import set_cpu_threads

    cfg = resolve(cfg.copy())
    check_cache_dir(cfg)
    devices = cfg.trainer.devices
    set_cpu_threads(devices if isinstance(devices, int) and devices > 0 else 1)  # the node's processes share its cores
    seed_everything(cfg.seed)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def check_cache_dir(cfg: DictConfig) -> None:
    """``cache_dir`` exists (it is created) and is writable: a one-line error otherwise."""
    folder = Path(cfg.cache_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cache_dir: cannot create '{folder}' ({e.strerror}); set cache_dir=PATH (or "
                          "RIM_BENCH_CACHE) to a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cache_dir: '{folder}' is not writable; set cache_dir=PATH (or RIM_BENCH_CACHE) "
                          "to a writable folder")


def build_device(cfg: DictConfig) -> torch.device:
    """Where to build references outside a Trainer: CUDA if it is allowed and there."""
    wants_gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")

