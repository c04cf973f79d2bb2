"""Matching cost as the reference bank grows, and a sweep point with warm caches.

    python benchmarks/matching.py [--regions 200] [--sizes 1000 10000 50000] [--dim 768]

Part 1 times RIM (KL, the default), RIM with exclude_self, and the cosine baseline for
200 regions against K references (random features, D = 768 as DINOv2 ViT-B), on the CPU
and on CUDA where there is one, and prints each size's cost relative to the smallest
(RIM is O(N K D + K^2 D + N K^2): expect about x100 per x10 references at large K). Times
are per image after a warm-up: up to `RIMMatcher.cache_limit` (8,192) references the
bank's K x K signatures are kept between images; above it they are recomputed per image.

Part 2 runs the smoke benchmark cold (empty cache: proposals, features, bank) and then
with only the matcher changed (warm caches), and prints the warm run as a fraction of
the cold one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time

import torch

from rim_bench.matching.baselines import CosineMatcher
from rim_bench.matching.rim import RIMMatcher
from rim_bench.types import ReferenceBank


def _time(fn, device: torch.device, repeats: int = 3) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def matching_growth(regions: int, sizes: list[int], dim: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(regions, dim, generator=g).to(device)
    methods = {
        "rim (kl)": RIMMatcher(0.05, "kl", 0.0, "max"),
        "rim (kl, exclude_self)": RIMMatcher(0.05, "kl", 0.0, "max", exclude_self=True),
        "cosine": CosineMatcher("max"),
    }
    print(f"\nmatching {regions} regions, D = {dim}, on {device}")
    print(f"{'method':<24}" + "".join(f"{f'K={k}':>14}" for k in sizes) + "   growth per size step")
    for name, matcher in methods.items():
        seconds = []
        for k in sizes:
            bank = ReferenceBank(torch.randn(k, dim, generator=g).to(device), torch.randint(0, 20, (k,), generator=g)
                                 .to(device), torch.arange(k, device=device), [str(i) for i in range(20)], [])
            seconds.append(_time(lambda: matcher(queries, bank), device, repeats=1 if k > 20000 else 3))
        growth = " ".join(f"x{b / a:.0f}" for a, b in zip(seconds, seconds[1:]))
        print(f"{name:<24}" + "".join(f"{s:>13.3f}s" for s in seconds) + f"   {growth}")


def sweep_point_fraction() -> None:
    from rim_bench.cli import main

    cache = tempfile.mkdtemp(prefix="rim-bench-sweep-bench-")
    common = ["test", "experiment=smoke", f"cache_dir={cache}"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        start = time.perf_counter()
        main([*common, f"output_dir={cache}/cold"])
        cold = time.perf_counter() - start
        start = time.perf_counter()
        main([*common, f"output_dir={cache}/warm", "matcher.rim.temperature=0.1"])
        warm = time.perf_counter() - start
    print(f"\nsmoke benchmark: cold run {cold:.2f} s, a sweep point with warm caches {warm:.2f} s "
          f"(fraction {warm / cold:.2f}; both include Lightning's start-up)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        matching_growth(args.regions, args.sizes, args.dim, device)
    if not args.skip_sweep:
        sweep_point_fraction()


if __name__ == "__main__":
    main()
