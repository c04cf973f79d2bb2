"""`rim-bench plan`: what a run will compute, what is cached, and what it will cost, before it starts.

Steps:
1. check the weights in seconds, before any model loads: SAM checkpoints (path, released
   size, ``model_type`` against the file), hub ids against the local hub cache (when it is
   offline or cannot be reached), local model folders, and the GPU's memory against the
   weights' size; then open the data set. Every problem, weights and data together, is one
   line, and the plan stops there. `test`, `build-bank`, `sweep` and `suite` run the same
   weight checks first (`require_weights`);
2. count the work: images to score and whose regions are cached, references to generate
   per class, and whether the bank is cached;
3. load each model once and run one test image and one reference image end to end
   (the reference in a scratch folder, so the caches are left as they were), timing each
   stage and its peak memory (`StageTimer`'s: resident memory on the CPU, allocated memory on CUDA);
4. project the whole run: each stage's cost times the items it still has to process.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from rim_bench.core.cache_layout import CacheLayout
from rim_bench.core.config import key_spec, references_spec
from rim_bench.core.errors import ConfigError, RimBenchError, error_line
from rim_bench.core.params import FileWeights, HubWeights, SamWeights
from rim_bench.core.registry import REGISTRIES, stage_weights
from rim_bench.core.timing import StageTimer

GB = 1e9
# Working memory beyond the weights on a GPU (activations, SAM's 1024 px masks, the UNet's
# attention at 512 px in fp16): our rough allowance for the check before loading; the dry run
# then measures the real peak.
GPU_HEADROOM_BYTES = 2 * 1024**3
# The dry run denoises this many steps and adds the rest at the measured cost of a UNet step.
PROBE_STEPS = 2


@dataclass
class Work:
    """What a run still has to do."""

    images: int = 0
    regions_cached: int = 0
    bank_dir: Path | None = None
    bank_cached: bool = False
    references: dict[str, dict[str, int]] = field(default_factory=dict)  # class → subcategories, shards, images

    @property
    def images_to_score(self) -> int:
        return self.images - self.regions_cached

    def total(self, what: str) -> int:
        return 0 if self.bank_cached else sum(c[what] for c in self.references.values())


def run_plan(cfg: DictConfig, measure: bool = True) -> dict:
    """`rim-bench plan`: print and return the checks, the work and (with `measure`) the projection."""
    from rim_bench.run.assembly import build_device, prepare
    from rim_bench.run.datamodule import build_dataset

    cfg = prepare(cfg)
    device = build_device(cfg)

    # 1. Weights, in seconds, then the data: every problem of both is listed.
    notes, problems = check_weights(cfg, device)
    try:
        dataset, classes = build_dataset(cfg.data)
    except RimBenchError as e:
        problems.append(error_line(e))
    for line in notes:
        print(f"  {line}")
    if problems:
        for line in problems:
            print(f"rim-bench: error: {line}", file=sys.stderr)
        raise ConfigError(f"{len(problems)} problem(s) with the weights or the data (above); nothing was loaded")

    # 2. The work.
    work = count_work(cfg, dataset, classes, device)
    print(describe_work(work, dataset.dir))
    report: dict[str, Any] = {"notes": notes, "work": work, "device": describe_device(device)}
    if not measure:
        return report

    # 3. One image and one reference image, end to end.
    timer = StageTimer()  # seconds and peak memory per stage
    wall = time.perf_counter()
    try:
        measure_stages(cfg, dataset, classes, device, timer, work)
    except torch.cuda.OutOfMemoryError as e:
        raise ConfigError(
            f"the GPU ran out of memory on one image ({str(e).splitlines()[0]}): lower "
            "references.diffusion.image_size, proposer.sam.points_per_batch or the models' sizes"
        ) from None

    # 4. The projection.
    report["timer"] = timer
    report["projection"] = project(timer, work, cfg.references.diffusion.num_inference_steps)
    report["dry_run_seconds"] = time.perf_counter() - wall
    print(format_projection(report["projection"], report["device"]))
    return report


# 1. Weights ------------------------------------------------------------------------------------

def check_weights(cfg: DictConfig, device: torch.device) -> tuple[list[str], list[str]]:
    """Notes and one-line problems about every model the config uses, without loading one."""
    from rim_bench.stages.backbones.sam import check_checkpoint, released_checkpoint

    notes: list[str] = []
    problems: list[str] = []
    weights: dict[str, int] = {}  # model → bytes on the device

    needed = declared_weights(cfg)
    for sam in (w for w in needed if isinstance(w, SamWeights)):
        try:
            path = check_checkpoint(sam.model_type, sam.checkpoint, sam.key)
        except RimBenchError as e:
            problems.append(str(e))
            continue
        _, verdict = released_checkpoint(path)
        notes.append(f"{sam.key}.checkpoint: {path} ({sam.model_type}): {verdict}")
        weights[f"SAM {sam.model_type}"] = path.stat().st_size

    for file in (w for w in needed if isinstance(w, FileWeights)):
        path = Path(file.path).expanduser()
        if not path.is_file():
            problems.append(f"{file.key}: no file '{file.path}' ({file.what})")
        else:
            notes.append(f"{file.key}: {path} ({path.stat().st_size / GB:.2f} GB)")
            weights[str(path)] = path.stat().st_size

    half = device.type == "cuda"  # Stable Diffusion runs in fp16 on CUDA
    for hub in (w for w in needed if isinstance(w, HubWeights)):
        problem, note, size = check_hub_model(hub.key, hub.model, hub.marker)
        if problem:
            problems.append(problem)
        else:
            notes.append(note)
            if size:
                weights[hub.model] = size // 2 if half and hub.key.startswith("references.") else size

    if device.type == "cuda" and not problems:
        problem = check_gpu_memory(weights, gpu_memory_bytes())
        if problem:
            problems.append(problem)
    return notes, problems


def require_weights(configs: list[DictConfig]) -> None:
    """The checks of `check_weights` for the long commands (`test`, `build-bank`, `sweep`, `suite`),
    before any data is read or model loaded: a one-line `ConfigError` naming every problem of
    `configs` (each once; configs that declare the same weights are checked once)."""
    from rim_bench.run.assembly import build_device

    problems: dict[str, None] = {}  # ordered, without repeats
    checked = set()
    for cfg in configs:
        device = build_device(cfg)
        needed = (device.type, *declared_weights(cfg))
        if needed not in checked:
            checked.add(needed)
            problems.update(dict.fromkeys(check_weights(cfg, device)[1]))
    if len(problems) == 1:
        raise ConfigError(next(iter(problems)))
    if problems:
        raise ConfigError(f"{len(problems)} problems with the weights, nothing was loaded: " + "; ".join(problems))


def declared_weights(cfg: DictConfig) -> list[HubWeights | SamWeights | FileWeights]:
    """What every stage the run uses says it loads (its ``weights`` classmethod): a per-pixel method
    alone, or the region stages; a mixed reference source's parts each say theirs."""
    needed: list[HubWeights | SamWeights | FileWeights] = []
    per_pixel = cfg.pixel.name != "regions"
    for key in (["pixel"] if per_pixel else [k for k in REGISTRIES if k != "pixel"]):
        spec = references_spec(cfg[key]) if key == "references" else key_spec(cfg[key], key)
        for part in spec.get("parts", [spec]):
            needed += stage_weights(key, part)
    return needed


def check_hub_model(key: str, model: str, marker: str) -> tuple[str | None, str, int]:
    """A problem (or None), a note, and the weights' size in bytes (0 when unknown) of one model
    (a folder holding `marker` when loadable)."""
    from rim_bench.stages.backbones.hub import cached_snapshot, hub_offline, hub_unreachable, is_local

    if is_local(model):
        folder = Path(model).expanduser()
        if not (folder / marker).is_file():
            return (f"{key}: '{model}' is not a model folder (no {marker} in it); give a hub id or a folder "
                    "saved with save_pretrained / downloaded with `hf download ID --local-dir DIR`"), "", 0
        size = weights_size(folder)
        return None, f"{key}: {folder} (local folder, {size / GB:.2f} GB)", size
    snapshot = cached_snapshot(model, marker)
    if snapshot is None:
        why = "HF_HUB_OFFLINE is set" if hub_offline() else None
        if why is None and (unreachable := hub_unreachable()):
            why = f"the hub cannot be reached ({unreachable})"
        if why:
            return (f"{key}: '{model}' is not in the local hub cache and {why}: run "
                    f"`hf download {model}` where there is a network (see docs/weights.md), or pass a local "
                    "folder"), "", 0
        return None, f"{key}: '{model}' is not in the local hub cache: it downloads on first load", 0
    size = weights_size(snapshot)
    return None, f"{key}: '{model}' (hub cache, {size / GB:.2f} GB)", size


def weights_size(folder: Path) -> int:
    """Bytes of a model folder's weight files (safetensors preferred, as the loaders do)."""
    files = list(folder.rglob("*.safetensors")) or list(folder.rglob("*.bin"))
    return sum(f.stat().st_size for f in files)


def gpu_memory_bytes() -> int:
    """The first CUDA device's total memory."""
    return int(torch.cuda.get_device_properties(0).total_memory)


def check_gpu_memory(weights: dict[str, int], total: int) -> str | None:
    """A problem line when the weights plus working memory exceed the GPU, else None."""
    need = sum(weights.values()) + GPU_HEADROOM_BYTES
    if need <= total:
        return None
    parts = " + ".join(f"{name} {size / GB:.1f}" for name, size in weights.items())
    return (f"trainer: the GPU has {total / GB:.1f} GB but these settings need about {need / GB:.1f} GB "
            f"({parts} + {GPU_HEADROOM_BYTES / GB:.1f} working, GB): use smaller models "
            "(proposer.sam.model_type=vit_b, featurizer.dinov2.model=facebook/dinov2-small) or a larger GPU")


# 2. Work ----------------------------------------------------------------------------------------

def count_work(cfg: DictConfig, dataset, classes: list[list[str]], device: torch.device) -> Work:
    """Images to score, regions cached, references to make per class, bank cached."""
    from rim_bench.data.base import load_rgb
    from rim_bench.run.pipeline import image_digest
    from rim_bench.run.region_cache import RegionCache
    from rim_bench.stages.references.bank import METADATA
    from rim_bench.stages.references.sources import build_references

    work = Work(images=len(dataset))
    layout = CacheLayout.of(cfg)
    if cfg.cache_regions:
        cache = RegionCache(layout.regions_dir())
        # Entries are named by image content (shared with `segment`): each image is read once to name it.
        work.regions_cached = sum(image_digest(load_rgb(entry.image)) in cache for entry in dataset.entries)
    source = build_references(cfg.references)
    work.bank_dir = layout.bank_dir(layout.bank_key(source, classes))
    work.bank_cached = (work.bank_dir / METADATA).is_file()
    diffusion = diffusion_source(source)
    if diffusion is not None and not work.bank_cached:
        work.references = diffusion.pending(layout, classes, device.type)
    return work


def diffusion_source(source):
    """The Stable Diffusion source of a (possibly mixed) reference source, or None."""
    from rim_bench.stages.references.diffusion import DiffusionReferences

    parts = getattr(source, "sources", [source])
    return next((s for s in parts if isinstance(s, DiffusionReferences)), None)


def describe_work(work: Work, data_dir: Path) -> str:
    lines = [f"images: {work.images} in {data_dir}; regions cached for {work.regions_cached}, "
             f"{work.images_to_score} to compute (SAM/superpixels + features)"]
    if work.bank_cached:
        lines.append(f"reference bank: cached ({work.bank_dir})")
    else:
        lines.append(f"reference bank: to build ({work.bank_dir})")
        if work.references:
            lines.append(f"references to generate: {work.total('images')} images, {work.total('shards')} "
                         f"(class, subcategory) shards to segment and pool")
            width = max(len(name) for name in work.references) + 2
            for name, c in work.references.items():
                lines.append(f"  {name:<{width}}{c['images']:>5} images to generate, {c['shards']:>3} of "
                             f"{c['subcategories']} subcategories to make")
    return "\n".join(lines)


# 3. One image and one reference image -----------------------------------------------------------

def measure_stages(cfg: DictConfig, dataset, classes: list[list[str]], device: torch.device,
                   timer: StageTimer, work: Work) -> None:
    """Run each stage once on real inputs, loading each model once; `timer` records the costs."""
    from rim_bench.core.types import BuildContext, ReferenceBank
    from rim_bench.run.assembly import Assembly
    from rim_bench.stages.references.sources import build_references

    class_names = [names[0] for names in classes]
    with timer("load models (test)"):
        pipeline = Assembly(cfg, timer).pipeline(class_names).to(device)
        pipeline.region_cache = None  # measure the stages, not the cache
    diffusion = diffusion_source(build_references(cfg.references))
    if diffusion is not None:
        with timer("load models (references)"):
            unet = diffusion.load_models(device).unet
        hooks = time_calls(unet, timer, "unet step")
        with tempfile.TemporaryDirectory(prefix="rim-bench-plan-") as scratch:
            ctx = BuildContext(pipeline.featurizer, pipeline.encoder, classes, device, Path(scratch), 0, 1,
                               lambda: None, timer, CacheLayout(Path(scratch)))
            diffusion.probe(ctx, steps=min(diffusion.steps, PROBE_STEPS))
        for hook in hooks:
            hook.remove()
        del diffusion, unet  # Stable Diffusion's memory back before the test side runs
    sample = dataset[0]
    _, regions = pipeline.regions(sample.image, sample.image_id)
    # Matching against a random bank of the size a generated bank will have (one per class otherwise).
    size = sum(c["subcategories"] for c in work.references.values()) * cfg.references.diffusion.images_per_subcategory
    size = max(size, len(classes))
    bank = ReferenceBank(torch.nn.functional.normalize(torch.randn(size, regions.shape[1]), dim=1).to(device),
                         torch.arange(size) % len(classes), torch.arange(size), class_names,
                         [f"{n}/{n}" for n in class_names], [{}] * size)
    with timer("matching"):
        pipeline.matcher(regions.to(device), bank)


def time_calls(module: torch.nn.Module, timer: StageTimer, stage: str) -> list:
    """Time every forward call of `module` as `stage` of `timer`; returns the hooks to remove."""
    open_stage = []

    def start(*_) -> None:
        open_stage.append(timer(stage))
        open_stage[-1].__enter__()

    def stop(*_) -> None:
        open_stage.pop().__exit__(None, None, None)

    return [module.register_forward_pre_hook(start), module.register_forward_hook(stop)]


# 4. Projection ----------------------------------------------------------------------------------

def project(timer: StageTimer, work: Work, steps: int = PROBE_STEPS) -> list[dict]:
    """Rows ``stage, seconds per item, items, projected seconds, peak bytes``: the test stages
    per image still to compute (matching: every image), the reference stages per image to
    generate, model loading once. A generated image costs what the dry run's did plus
    ``steps - PROBE_STEPS`` UNet steps at their measured cost."""
    items = {"proposals": work.images_to_score, "features": work.images_to_score, "pooling": work.images_to_score,
             "region map": work.images_to_score, "painting": work.images, "matching": work.images,
             "generation": work.total("images"), "sam": work.total("images"), "dinov2": work.total("images")}
    unet_step = timer.seconds.get("unet step", 0.0) / max(1, timer.calls.get("unet step", 0))
    rows = []
    for stage, seconds in timer.seconds.items():
        if stage == "unet step":  # inside "generation"
            continue
        per_item = seconds / max(1, timer.calls[stage])
        if stage == "generation":
            per_item += max(0, steps - PROBE_STEPS) * unet_step
        count = 1 if stage.startswith("load models") else items.get(stage, 1)
        peak = timer.peak_cuda.get(stage) if timer.peak_cuda else timer.peak_rss.get(stage, 0)
        rows.append({"stage": stage, "seconds": per_item, "items": count, "projected": per_item * count,
                     "peak_bytes": peak or 0})
    return rows


def format_projection(rows: list[dict], device: str) -> str:
    lines = [f"\nprojected cost of the whole run on this machine ({device}), from one image and one reference image:",
             f"{'stage':<28}{'per item':>10}{'items':>8}{'projected':>12}{'peak memory':>13}"]
    for r in rows:
        lines.append(f"{r['stage']:<28}{_duration(r['seconds']):>10}{r['items']:>8}{_duration(r['projected']):>12}"
                     f"{r['peak_bytes'] / GB:>10.2f} GB")
    total = sum(r["projected"] for r in rows)
    peak = max((r["peak_bytes"] for r in rows), default=0)
    lines.append(f"{'total':<28}{'':>10}{'':>8}{_duration(total):>12}{peak / GB:>10.2f} GB")
    return "\n".join(lines)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {gpu_memory_bytes() / GB:.0f} GB"
    return f"CPU, {torch.get_num_threads()} thread(s), {os.cpu_count()} cores"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
