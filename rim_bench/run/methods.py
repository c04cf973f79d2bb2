"""The methods: what turns a test image into a `Prediction`, behind one seam (`rim_bench.core.protocols.Method`).

The config's ``pipeline`` key picks a registered method kind:
- ``regions``: RIM and its ablations. SAM (or superpixels) proposes regions, a dense featurizer and
  a pooling give their features, a matcher scores them against a reference bank, a segmenter paints
  the labels (the blocks proposer, featurizer, pooling, references, matcher, segmenter).
- ``pixel``: a per-pixel method (``pixel.name``; the peers MaskCLIP, SCLIP, NACLIP, ClearCLIP) labels
  every pixel; its vocabulary is its text embeddings (the block pixel).

Making a method loads nothing: commands ask it what it reads (`blocks`, hence the result hash),
which weights it needs (`weights`, checked in seconds before a run), how to describe its results
(`describe`) and what `rim-bench plan` counts and times; `load` and `set_vocabulary` do the work.
A new kind is one class registered with ``@METHODS.register("name")``; a new peer is one pixel
stage (`rim_bench.core.protocols.PixelLabeler`) and one method file, with no change here.

This module imports no torch at the top: `result_spec` serves ``rim-bench config``, which loads none.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from omegaconf import DictConfig

from rim_bench.core.cache_layout import CacheLayout
from rim_bench.core.config import DATA_RUNTIME_KEYS, TRAINER_KEYS, composed_spec, key_spec, to_dict, variant_names
from rim_bench.core.errors import ConfigError
from rim_bench.core.params import Weights
from rim_bench.core.protocols import Work
from rim_bench.core.registry import METHODS, stage_weights

if TYPE_CHECKING:
    import torch

    from rim_bench.core.timing import StageTimer
    from rim_bench.core.types import Prediction, ReferenceBank
    from rim_bench.run.assembly import Assembly
    from rim_bench.run.pipeline import PixelPipeline, SegmentationPipeline

# The dry run of `rim-bench plan` denoises this many steps and adds the rest at the measured cost of a UNet step.
PROBE_STEPS = 2


def method_class(cfg: DictConfig) -> Any:
    """The registered method kind that ``cfg.pipeline`` names."""
    return METHODS.get(str(cfg.pipeline), "pipeline")


def result_spec(cfg: DictConfig) -> dict[str, Any]:
    """Everything in `cfg` that changes a result: the seed, the data, the blocks the method reads,
    the precision and any other Trainer argument (e.g. limit_test_batches scores fewer images)."""
    spec: dict[str, Any] = {"seed": cfg.seed}
    spec["data"] = {k: v for k, v in to_dict(cfg.data).items() if k not in DATA_RUNTIME_KEYS}
    kind = method_class(cfg)
    for key in kind.blocks:
        spec[key] = composed_spec(cfg[key], key)
    if kind.blocks != RegionMethod.blocks:  # the region path's hashes stay what they were before there were kinds
        spec["pipeline"] = str(cfg.pipeline)
    # Half precision changes features, hence results; unset, each kind runs in its own (`unset_precision`).
    precision = cfg.trainer.precision
    spec["precision"] = str(precision) if precision is not None else kind.unset_precision
    extra = {k: v for k, v in to_dict(cfg.trainer).items() if k not in TRAINER_KEYS}
    if extra:
        spec["trainer"] = extra
    return spec


def declared_weights(cfg: DictConfig) -> list[Weights]:
    """What the stages of the method `cfg` selects say they load (a composite stage's parts each theirs)."""
    needed: list[Weights] = []
    for key in method_class(cfg).blocks:
        spec = composed_spec(cfg[key], key)
        for part in spec.get("parts", [spec]):
            needed += stage_weights(key, part)
    return needed


class _MethodBase:
    """What both kinds share: the config they read, the weights their blocks declare, and a call that
    segments with the models `load` made (``self.pipeline``)."""

    pipeline: Any = None

    def __init__(self, assembly: Assembly) -> None:
        self.assembly = assembly
        self.cfg = assembly.cfg

    def weights(self) -> list[Weights]:
        return declared_weights(self.cfg)

    def __call__(self, image: Any, image_id: str | None = None) -> Prediction:
        if self.pipeline is None:
            raise RuntimeError("load() and set_vocabulary() must come before segmenting")
        return self.pipeline(image, image_id)


@METHODS.register("regions")
class RegionMethod(_MethodBase):
    """RIM's region pipeline (`SegmentationPipeline`) against a reference bank."""

    blocks: ClassVar[tuple[str, ...]] = ("proposer", "featurizer", "pooling", "references", "matcher", "segmenter")
    unset_precision: ClassVar[str] = "32-true"  # with trainer.precision unset (its result hashes stay as they were)

    def __init__(self, assembly: Assembly) -> None:
        super().__init__(assembly)
        self.pipeline: SegmentationPipeline | None = None
        self.bank_path: Path | None = None
        self.bank_cached = False
        self._bank_size = 0  # of the bank a run will build, as `count_work` counts it

    def describe(self) -> dict[str, str]:
        from rim_bench.core.registry import stage_spec
        from rim_bench.stages.segmenter.background import describe_background

        return {"background": describe_background(stage_spec(self.cfg.segmenter, "segmenter")), "own_settings": ""}

    def load(self, device: torch.device) -> SegmentationPipeline:
        if self.pipeline is None:
            self.pipeline = self.assembly.pipeline()
        return self.pipeline.to(device)

    def set_vocabulary(self, classes: list[list[str]], device: torch.device, rank: int = 0, wait: bool = False,
                       subcategories: dict[str, list[str]] | None = None) -> ReferenceBank:
        """Load or build the bank for `classes` (`subcategories`: phrases per class for generated references,
        as `rim_bench.run.vocabulary.subcategory_table` reads them)."""
        from rim_bench.run.vocabulary import with_subcategories

        pipeline = self.load(device)
        cfg = with_subcategories(self.cfg, classes, subcategories)
        pipeline.segmenter = self.assembly.segmenter([names[0] for names in classes])  # a bad rule fails at once
        with self.assembly.timer("reference bank"):
            build = self.assembly.bank(classes, device, rank=rank, wait=wait, cfg=cfg)
        pipeline.set_bank(build.bank)
        self.bank_path, self.bank_cached = build.path, build.cached
        return build.bank

    def summary(self) -> str:
        """One line on the vocabulary's bank, for the log."""
        from rim_bench.stages.references.bank import bank_summary

        assert self.pipeline is not None and self.pipeline.bank is not None
        bank = self.pipeline.bank
        return (f"reference bank: {len(bank)} references ({'cached' if self.bank_cached else 'built'}, "
                f"{self.bank_path}); {bank_summary(bank)}")

    def record(self) -> dict[str, Any]:
        bank = self.pipeline.bank if self.pipeline is not None else None
        return {"bank": {"path": str(self.bank_path), "cached": self.bank_cached, "num_references": len(bank)}
                if bank is not None else None,
                "resolved": self.pipeline.resolved_settings() if self.pipeline is not None else {}}

    def count_work(self, dataset: Any, classes: list[list[str]], device: torch.device) -> Work:
        """Images whose regions are cached, references to generate per class, whether the bank is cached."""
        from rim_bench.data.base import load_rgb
        from rim_bench.run.pipeline import image_digest
        from rim_bench.run.region_cache import RegionCache
        from rim_bench.stages.references.bank import METADATA
        from rim_bench.stages.references.sources import build_references

        layout = CacheLayout.of(self.cfg)
        cached = 0
        if self.cfg.cache_regions:
            cache = RegionCache(layout.regions_dir())
            # Entries are named by image content (shared with `segment`): each image is read once to name it.
            cached = sum(image_digest(load_rgb(entry.image)) in cache for entry in dataset.entries)
        source = build_references(self.cfg.references)
        bank_dir = layout.bank_dir(layout.bank_key(source, classes))
        bank_cached = (bank_dir / METADATA).is_file()
        pending: dict[str, dict[str, int]] = {} if bank_cached else source.pending(layout, classes, device.type)
        to_score, generate = len(dataset) - cached, sum(c["images"] for c in pending.values())
        lines = [f"images: {len(dataset)} in {dataset.dir}; regions cached for {cached}, {to_score} to compute "
                 "(SAM/superpixels + features)",
                 f"reference bank: {'cached' if bank_cached else 'to build'} ({bank_dir})"]
        if pending:
            lines.append(f"references to generate: {generate} images, {sum(c['shards'] for c in pending.values())} "
                         "(class, subcategory) shards to segment and pool")
            width = max(len(name) for name in pending) + 2
            lines += [f"  {name:<{width}}{c['images']:>5} images to generate, {c['shards']:>3} of "
                      f"{c['subcategories']} subcategories to make" for name, c in pending.items()]
        items = {"proposals": to_score, "features": to_score, "pooling": to_score, "region map": to_score,
                 "painting": len(dataset), "matching": len(dataset),
                 "generation": generate, "sam": generate, "dinov2": generate}
        # Matching is timed against a random bank of the size a generated bank will have (one per class otherwise).
        per_subcategory = max((int(self.cfg.references[n].get("images_per_subcategory") or 1)
                               for n in variant_names(self.cfg.references, "references")), default=1)
        self._bank_size = max(sum(c["subcategories"] for c in pending.values()) * per_subcategory, len(classes))
        return Work(items, lines)

    def measure(self, dataset: Any, classes: list[list[str]], device: torch.device, timer: StageTimer,
                work: Work) -> None:
        """One test image and one generated reference image end to end (in a scratch folder); matching
        against a random bank of the size the real one will have."""
        import torch

        from rim_bench.core.types import BuildContext, ReferenceBank
        from rim_bench.stages.references.sources import build_references

        class_names = [names[0] for names in classes]
        self.assembly.timer = timer  # the stages it builds now report to the dry run's timer
        with timer("load models (test)"):
            pipeline = self.assembly.pipeline(class_names).to(device)
            pipeline.region_cache = None  # measure the stages, not the cache
        source = build_references(self.cfg.references)
        with tempfile.TemporaryDirectory(prefix="rim-bench-plan-") as scratch:
            ctx = BuildContext(pipeline.featurizer, pipeline.encoder, classes, device, Path(scratch), 0, 1,
                               lambda: None, timer, CacheLayout(Path(scratch)))
            work.extra_unet_steps = source.probe(ctx, PROBE_STEPS)
        del source  # a generator's memory back before the test side runs
        sample = dataset[0]
        _, regions = pipeline.regions(sample.image, sample.image_id)
        size = self._bank_size or len(classes)
        bank = ReferenceBank(torch.nn.functional.normalize(torch.randn(size, regions.shape[1]), dim=1).to(device),
                             torch.arange(size) % len(classes), torch.arange(size), class_names,
                             [f"{n}/{n}" for n in class_names], [{}] * size)
        with timer("matching"):
            pipeline.matcher(regions.to(device), bank)


@METHODS.register("pixel")
class PixelMethod(_MethodBase):
    """A per-pixel method (``pixel.name``, a `PixelLabeler`): every pixel labelled, no regions, no bank."""

    blocks: ClassVar[tuple[str, ...]] = ("pixel",)
    unset_precision: ClassVar[str] = "peer"  # with trainer.precision unset: the peer's own (float16 on CUDA)

    def __init__(self, assembly: Assembly) -> None:
        super().__init__(assembly)
        self.pipeline: PixelPipeline | None = None

    def describe(self) -> dict[str, str]:
        """Its own rule (the pixel block's ``prob_thd``, where it has one), and whether the run kept every
        setting the method file gives for this benchmark (then a published number of it compares)."""
        spec = key_spec(self.cfg.pixel, "pixel")
        rule = f"best probability < {spec['prob_thd']} → class 0" if spec.get("prob_thd") else "none"
        return {"background": f"{spec['name']}'s own: {rule}", "own_settings": self._own_settings()}

    def _own_settings(self) -> str:
        """The method file's name when this run has every setting that file gives for its benchmark
        (nothing overridden, no protocol, the benchmark's own classes); "" otherwise."""
        from rim_bench.core.config import load_config, resolve

        cfg = self.cfg
        if not cfg.method or cfg.protocol or cfg.data.classes or not self._file_covers(str(cfg.method)):
            return ""
        plain = resolve(load_config([f"experiment={cfg.data.name}", f"method={cfg.method}"]))
        keep = {"model", "bpe", "chunk"}  # where the weights are and how many windows a forward takes change no label
        ours, theirs = (({k: v for k, v in key_spec(c.pixel, "pixel").items() if k not in keep}) for c in (cfg, plain))
        return str(cfg.method) if ours == theirs else ""

    def _file_covers(self, method: str) -> bool:
        from rim_bench.core.config import method_benchmarks

        try:
            return str(self.cfg.data.name) in method_benchmarks(method)
        except ConfigError:
            return False

    def _stage(self) -> Any:
        """The `PixelLabeler` of ``pixel.name``; its constructor is given where to cache text embeddings and
        ``trainer.precision``."""
        from rim_bench.core.registry import PIXEL_METHODS, build_stage

        return build_stage(PIXEL_METHODS, self.cfg.pixel, "pixel", text_dir=CacheLayout.of(self.cfg).text_dir(),
                           precision=self.cfg.trainer.precision)

    def load(self, device: torch.device) -> PixelPipeline:
        from rim_bench.run.pipeline import PixelPipeline

        if self.pipeline is None:
            self.pipeline = PixelPipeline(self._stage(), self.assembly.timer)
        return self.pipeline.to(device)

    def set_vocabulary(self, classes: list[list[str]], device: torch.device, rank: int = 0, wait: bool = False,
                       subcategories: dict[str, list[str]] | None = None) -> None:
        """Embed the query names of `classes` (read from the text cache when embedded before)."""
        if subcategories:
            raise ConfigError("subcategories= needs generated references (pipeline=regions, references.name="
                              f"diffusion or mixed); the per-pixel method pixel.{self.cfg.pixel.name} embeds names")
        self.load(device).set_vocabulary(classes)

    def summary(self) -> str:
        assert self.pipeline is not None
        return f"text embeddings: the query names of {self.pipeline.num_classes} classes (pixel.{self.cfg.pixel.name})"

    def record(self) -> dict[str, Any]:
        # No bank; of its settings only what it chose at run time (a peer's dtype), the rest is in its config.
        return {"bank": None, "resolved": self.pipeline.resolved_settings() if self.pipeline is not None else {}}

    def count_work(self, dataset: Any, classes: list[list[str]], device: torch.device) -> Work:
        name = self.cfg.pixel.name
        lines = [f"images: {len(dataset)} in {dataset.dir}; every pixel labelled by pixel.{name} (no regions, "
                 "no reference bank)",
                 f"text embeddings: the query names of {len(classes)} classes, once (the dry run below makes them "
                 "into the text cache, from which the run reads them)"]
        return Work({"pixel method": len(dataset), "text embeddings": 1}, lines)

    def measure(self, dataset: Any, classes: list[list[str]], device: torch.device, timer: StageTimer,
                work: Work) -> None:
        """The model loaded, the vocabulary's names embedded (into the text cache: the run's own work,
        done once), one test image labelled."""
        self.assembly.timer = timer  # the pipeline it loads now reports to the dry run's timer
        with timer("load models (test)"):
            self.load(device)
        self.set_vocabulary(classes, device)  # timed as "text embeddings"
        sample = dataset[0]
        self(sample.image, sample.image_id)  # timed as "pixel method"
