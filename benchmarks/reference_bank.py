"""Reference-bank build cost per stage, and what a cache hit saves.

    python benchmarks/reference_bank.py [key=value ...]

Defaults to tiny random models on the smoke vocabulary (6 classes x 3 subcategories x 2
images, 64 px, 5 steps); pass real ones (references.diffusion.model=..., sam paths,
featurizer.dinov2.model=..., image_size=512) on a GPU machine. Prints seconds per
reference for generation (with attention capture), SAM and DINOv2, and the ratio of a
cache-hit build to a cold build.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from rim_bench.core.config import load_config
from rim_bench.core.timing import StageTimer
from rim_bench.run.assembly import Assembly

SMOKE_SUBCATEGORIES = """\
background: [background, grey wall, brown floor]
sun: [sun, setting sun, yellow sun]
leaf: [leaf, green leaf, maple leaf]
sea: [sea, calm sea, stormy sea]
berry: [berry, red berry, strawberry]
grape: [grape, purple grape, green grape]
"""


def main(argv: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="rim-bench-bank-bench-"))
    (work / "subs.yaml").write_text(SMOKE_SUBCATEGORIES)
    cfg = load_config([
        "experiment=smoke", f"cache_dir={work / 'cache'}", "references.name=diffusion",
        "references.diffusion.model=tiny", f"references.diffusion.subcategories={work / 'subs.yaml'}",
        "references.diffusion.image_size=64", "references.diffusion.num_inference_steps=5",
        "references.diffusion.sam.model_type=tiny", "references.diffusion.contact_sheets=false", *argv,
    ])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    classes = [[line.split(":")[0]] for line in SMOKE_SUBCATEGORIES.splitlines()]
    assembly = Assembly(cfg)
    assembly.featurizer.to(device)  # loaded outside the timed builds, as the test side has it

    def build() -> tuple[float, StageTimer, int]:
        assembly.timer = timer = StageTimer()
        start = time.perf_counter()
        bank = assembly.bank(classes, device).bank
        return time.perf_counter() - start, timer, len(bank)

    cold, timer, count = build()
    warm, _, _ = build()
    print(f"device: {device}  references: {count}  (generation runs once per subcategory, batched over images)")
    for stage in ("generation", "sam", "dinov2"):
        print(f"{stage:<12} {1000 * timer.seconds.get(stage, 0.0) / count:8.1f} ms/reference")
    print(f"cold build   {cold:8.2f} s   (models loaded on first use: included)")
    print(f"cache hit    {warm:8.3f} s")
    print(f"ratio cache-hit / cold build: {warm / cold:.4f}  ({cold / warm:.0f}x faster)")


if __name__ == "__main__":
    main(sys.argv[1:])
