"""`rim-bench plan`: what a run will compute, what is cached, and what it will cost, before it starts.

Steps, each asked of the run's method (`rim_bench.core.protocols.Method`), so a region method and a
per-pixel peer each plan their own stages:
1. check the weights in seconds, before any model loads (`rim_bench.run.weights`: SAM checkpoints,
   hub models, a CLIP file loaded and checked for non-finite values, the GPU's memory); then open
   the data set. Every problem, weights and data together, is one line, and the plan stops there.
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
from typing import Any

import torch
from omegaconf import DictConfig

from rim_bench.core.errors import ConfigError, RimBenchError, error_line
from rim_bench.core.protocols import Work
from rim_bench.core.timing import StageTimer
from rim_bench.run.weights import GB, check_weights, gpu_memory_bytes


def run_plan(cfg: DictConfig, measure: bool = True) -> dict:
    """`rim-bench plan`: print and return the checks, the work and (with `measure`) the projection."""
    from rim_bench.run.assembly import Assembly, build_device, prepare
    from rim_bench.run.datasets import build_dataset

    cfg = prepare(cfg)
    device = build_device(cfg)
    method = Assembly(cfg).method()

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
    print(format_projection(report["projection"], report["device"]))
    return report


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
