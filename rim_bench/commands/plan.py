"""`rim-bench plan`: what a run will compute, what is cached, and what it will cost, before it starts.

Steps, each asked of the run's method (`rim_bench.core.protocols.Method`), so a region method and a
per-pixel peer each plan their own stages:
1. check the weights in seconds, before any model loads (`rim_bench.run.weights`: SAM checkpoints,
   hub models, a CLIP file loaded and checked for non-finite values, the GPU's memory); then open
   the data set. Every problem, weights and data together, is one line, and the plan stops there,
   having printed what it can without measuring (`unmeasured`): each missing download with its size
   and where it goes (`rim_bench.run.weights.missing_downloads`, sizes in rim_bench/core/downloads.yaml)
   and the run projected from per-item figures measured elsewhere (rim_bench/run/cost_figures.yaml);
   `test`, `build-bank`, `sweep` and `suite` run the same weight checks first (`require_weights`);
2. count the work (`Method.count_work`): e.g. images whose regions are cached, references to
   generate per class, whether the bank is cached; or the text embeddings to make;
3. load each model once and run one test image (and one reference image) end to end
   (`Method.measure`, caches left as they were), timing each stage and its peak memory
   (`StageTimer`'s: resident memory on the CPU, allocated memory on CUDA);
4. project the whole run: each stage's cost times the items it still has to process.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from rim_bench.core.errors import ConfigError, RimBenchError, error_line
from rim_bench.core.protocols import Method, Work
from rim_bench.core.timing import StageTimer
from rim_bench.run.weights import GB, check_weights, format_downloads, gpu_memory_bytes, missing_downloads


def run_plan(cfg: DictConfig, measure: bool = True) -> dict:
    """`rim-bench plan`: print and return the checks, the work and (with `measure`) the projection."""
    from rim_bench.run.assembly import Assembly, build_device, prepare
    from rim_bench.run.datasets import build_dataset

    cfg = prepare(cfg)
    device = build_device(cfg)
    method = Assembly(cfg).method()

    # 1. Weights, in seconds, then the data: every problem of both is listed.
    notes, problems = check_weights(cfg, device)
    dataset = None
    try:
        dataset, classes = build_dataset(cfg.data)
    except RimBenchError as e:
        problems.append(error_line(e))
    for line in notes:
        print(f"  {line}")
    if problems:  # nothing can be measured: what to download, and the cost measured elsewhere
        unmeasured(cfg, method, dataset, device)
        for line in problems:
            print(f"rim-bench: error: {line}", file=sys.stderr)
        raise ConfigError(f"{len(problems)} problem(s) with the weights or the data (above); nothing was loaded")

    # 2. The work.
    work = method.count_work(dataset, classes, device)
    print("\n".join(work.lines))
    report: dict[str, Any] = {"notes": notes, "work": work, "device": describe_device(device)}
    if not measure:
        return report

    # 3. One image (and one reference image), end to end.
    timer = StageTimer()  # seconds and peak memory per stage
    wall = time.perf_counter()
    try:
        method.measure(dataset, classes, device, timer, work)
    except torch.cuda.OutOfMemoryError as e:
        raise ConfigError(
            f"the GPU ran out of memory on one image ({str(e).splitlines()[0]}): lower "
            "references.diffusion.image_size, proposer.sam.points_per_batch or the models' sizes"
        ) from None

    # 4. The projection.
    report["timer"] = timer
    report["projection"] = project(timer, work)
    report["dry_run_seconds"] = time.perf_counter() - wall
    print(format_projection(report["projection"], f"\nprojected cost of the whole run on this machine "
                            f"({report['device']}), from one image and one reference image:"))
    return report


def unmeasured(cfg: DictConfig, method: Method, dataset: Any, device: torch.device) -> dict[str, Any]:
    """Print (and return) what a plan that cannot measure still knows: each missing download with its
    size and where it goes, and the run's cost projected from the per-item figures measured elsewhere
    (`rim_bench.run.cost_figures`: this machine's kind and, labelled, a GPU's where one was measured)
    times this run's work, the benchmark's validation set counted when it cannot be read."""
    from rim_bench.run.cost_figures import figure_sets, val_images
    from rim_bench.run.datamodule import class_list

    downloads = missing_downloads(cfg)
    if downloads:
        print(format_downloads(downloads))
    report: dict[str, Any] = {"downloads": downloads, "projections": []}
    sets = figure_sets(str(cfg.pipeline))
    benchmark = str(cfg.data.name)
    if dataset is None:
        size = val_images(benchmark)
        if size is None:
            print(f"\nprojected cost: not known (the data set is not there, and {benchmark}'s size is not listed)")
            return report
        dataset = NotRead(size, f"{benchmark}'s validation set (not read; its size from datasets/README.md)")
    try:
        classes = class_list(cfg.data)
    except RimBenchError as e:
        print(f"\nprojected cost: not known ({error_line(e)})")
        return report
    work = method.count_work(dataset, classes, device)
    if not sets:
        print(f"\nprojected cost: no per-item figures measured for pipeline={cfg.pipeline} yet "
              "(rim_bench/run/cost_figures.yaml); `rim-bench plan` with the weights measures them here")
        return report
    print("\n".join(work.lines))
    for figures in sets:
        rows = figures.project(work)
        report["projections"].append({"device": figures.device, "rows": rows})
        heading = (f"\nprojected cost of the whole run on {benchmark} ({len(dataset):,} images), on "
                   f"{'a GPU: ' if figures.gpu else ''}{figures.device}\n(not measured here: the per-item figures "
                   f"of {figures.source})")
        print(format_projection(rows, heading))
        if differs := figures.differences(cfg):
            print(f"  measured at other settings than this run's: {', '.join(differs)}")
    if not any(f.gpu for f in sets):
        print("  on a GPU: not measured yet (docs/cost.md); `rim-bench plan` there, with the weights, measures it")
    return report


@dataclass(frozen=True)
class NotRead:
    """A data set that is not there, as `Method.count_work` reads one: its size, nothing cached."""

    size: int
    dir: str
    entries: tuple = ()

    def __len__(self) -> int:
        return self.size


def project(timer: StageTimer, work: Work) -> list[dict]:
    """Rows ``stage, seconds per item, items, projected seconds, peak bytes``: each timed stage's cost
    per item times the items `work` gives it (model loading and any stage it does not name: once).
    A generated image costs what the dry run's did plus ``work.extra_unet_steps`` UNet steps at their
    measured cost (timed inside "generation" as "unet step")."""
    unet_step = timer.seconds.get("unet step", 0.0) / max(1, timer.calls.get("unet step", 0))
    rows = []
    for stage, seconds in timer.seconds.items():
        if stage == "unet step":  # inside "generation"
            continue
        per_item = seconds / max(1, timer.calls[stage])
        if stage == "generation":
            per_item += work.extra_unet_steps * unet_step
        count = 1 if stage.startswith("load models") else work.items.get(stage, 1)
        peak = timer.peak_cuda.get(stage) if timer.peak_cuda else timer.peak_rss.get(stage, 0)
        rows.append({"stage": stage, "seconds": per_item, "items": count, "projected": per_item * count,
                     "peak_bytes": peak or 0})
    return rows


def format_projection(rows: list[dict], heading: str) -> str:
    """The projection's table under `heading`: per stage its cost per item, items, projected time and peak
    memory (``peak_bytes`` None: not known), then the total."""
    lines = [heading, f"{'stage':<28}{'per item':>10}{'items':>8}{'projected':>12}{'peak memory':>13}"]
    for r in rows:
        lines.append(f"{r['stage']:<28}{_duration(r['seconds']):>10}{r['items']:>8,}{_duration(r['projected']):>12}"
                     + _memory(r["peak_bytes"]))
    total = sum(r["projected"] for r in rows)
    peaks = [r["peak_bytes"] for r in rows if r["peak_bytes"] is not None]
    lines.append(f"{'total':<28}{'':>10}{'':>8}{_duration(total):>12}" + _memory(max(peaks) if peaks else None))
    return "\n".join(lines)


def _memory(peak: int | None) -> str:
    return f"{peak / GB:>10.2f} GB" if peak is not None else f"{'-':>13}"


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
