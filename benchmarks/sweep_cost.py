"""The cost of a 6 x 5 sweep (subcategories x tau, `configs/sweep/tau_subcategories.yaml`) in cold runs.

    python benchmarks/sweep_cost.py [key=value ...]

On the smoke benchmark with tiny random models (64 px references, 5 steps, 10
subcategories per class). The cold run is the largest point (10 subcategories) in an
empty cache; the sweep runs all 30 points in another empty cache. Without any reuse the
sweep would cost about 30 cold runs; regions are computed once for the whole sweep and
references once per tau. Prints the per-stage breakdown of both.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from rim_bench.commands.sweep import SweepSpec, run_sweep
from rim_bench.core.config import load_config
from rim_bench.run.runner import run_test

CLASSES = ("background", "sun", "leaf", "sea", "berry", "grape")
GRID = {"references.diffusion.n_subcategories": [1, 2, 4, 6, 8, 10],
        "references.diffusion.attn_threshold": [0.2, 0.3, 0.4, 0.5, 0.6]}


def main(argv: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="rim-bench-sweep-cost-"))
    subs = work / "subs.yaml"
    subs.write_text("".join(f"{c}: [{', '.join([c] + [f'{c} {i}' for i in range(1, 10)])}]\n" for c in CLASSES))
    base = ["experiment=smoke", "references.name=diffusion", "references.diffusion.model=tiny",
            f"references.diffusion.subcategories={subs}", "references.diffusion.image_size=64",
            "references.diffusion.num_inference_steps=5", "references.diffusion.mask=attention",
            "references.diffusion.contact_sheets=false", *argv]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        start = time.perf_counter()
        run_test(load_config([*base, f"cache_dir={work / 'cold'}", f"output_dir={work / 'cold-run'}",
                              "references.diffusion.n_subcategories=10", "references.diffusion.attn_threshold=0.4"]))
        cold = time.perf_counter() - start
        start = time.perf_counter()
        run_sweep([*base, f"cache_dir={work / 'sweep'}", f"output_dir={work / 'sweep-run'}"],
                  SweepSpec("tau_subcategories", "grid", GRID))
        sweep = time.perf_counter() - start
    cold_stages = json.loads((work / "cold-run" / "metrics.json").read_text())["seconds"]
    sweep_stages: dict[str, float] = {}
    for metrics in sorted((work / "sweep-run").glob("point-*/metrics.json")):
        for stage, seconds in json.loads(metrics.read_text())["seconds"].items():
            sweep_stages[stage] = sweep_stages.get(stage, 0.0) + seconds
    sweep_stages["outside the runs (config checks, tables, plots)"] = sweep - sweep_stages["total"]
    print(f"{'stage':<50}{'cold run s':>12}{'30-point sweep s':>18}")
    for stage in [*cold_stages, "outside the runs (config checks, tables, plots)"]:
        if stage != "total":
            print(f"{stage:<50}{cold_stages.get(stage, 0.0):>12.2f}{sweep_stages.get(stage, 0.0):>18.2f}")
    print(f"{'wall':<50}{cold:>12.2f}{sweep:>18.2f}")
    print(f"sweep / cold run: {sweep / cold:.1f}x   (no reuse: about 30x)")

if __name__ == "__main__":
    main(sys.argv[1:])
