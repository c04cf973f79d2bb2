"""RIM's matching cost next to nearest-reference cosine, as the reference bank grows.

    python benchmarks/matching.py [--sizes 1000 10000 100000] [--regions 200] [--dim 768]
                                  [--device cpu|cuda] [--dtype float32|float16] [--js-budget 60]
                                  [--json benchmarks/results/matching-cpu.json]

For each bank size K (random features, D = 768 as DINOv2 ViT-B, 20 classes) it prints:

* the bank precompute: RIM's K log-normalizers (`bank_normalizers`, shared by KL and
  KL + exclude_self; O(K^2 D) time, O(K + block K) memory), its seconds and the process's
  peak memory while it runs (host RSS; CUDA max allocated on a GPU);
* seconds per image of 200 regions for cosine (`CosineMatcher`, max) and RIM with KL,
  KL + exclude_self and JS (T = 0.05, alpha = 0, max), each after a warm-up, the methods
  interleaved over the repeats (the median is shown; one repeat for a method slower than 5 s)
  so that a change of load on a shared machine hits them alike; and each one's ratio to
  cosine at the same K.

JS has no closed form: O(N K^2) per image. A size where its time, extrapolated from the
previous size (x (K / K_prev)^2), exceeds --js-budget seconds is skipped and marked so.
The machine's load (1-minute average, before and after), torch's thread count and the
CPU seconds next to the wall seconds are printed and saved with the table, since on a
shared machine the wall time says little without them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from rim_bench.core.timing import host_peak_bytes, restart_host_peak
from rim_bench.core.types import ReferenceBank
from rim_bench.stages.matching.baselines import CosineMatcher
from rim_bench.stages.matching.rim import RIMMatcher, bank_normalizers

TEMPERATURE = 0.05
SLOW = 5.0  # seconds
MB = 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _seconds(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def random_bank(k: int, dim: int, device: torch.device, dtype: torch.dtype, g: torch.Generator) -> ReferenceBank:
    features = torch.randn(k, dim, generator=g).to(device, dtype)
    class_ids = torch.randint(0, 20, (k,), generator=g).to(device)
    return ReferenceBank(features, class_ids, torch.arange(k, device=device), [f"c{i}" for i in range(20)], [])


def precompute(bank: ReferenceBank, device: torch.device) -> dict:
    """Time RIM's per-bank normalizers and the process's peak memory while they are computed."""
    rss_before = host_peak_bytes()
    restart_host_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    cpu_start = time.process_time()
    seconds = _seconds(lambda: bank.derived.setdefault(("rim.normalizers", TEMPERATURE),
                                                       bank_normalizers(bank.features, TEMPERATURE)), device)
    row = {"seconds": round(seconds, 4), "cpu_seconds": round(time.process_time() - cpu_start, 4),
           "peak_rss_mb": round(host_peak_bytes() / MB, 1), "rss_before_mb": round(rss_before / MB, 1)}
    if device.type == "cuda":
        row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / MB, 1)
        row["cuda_before_mb"] = round(cuda_before / MB, 1)
    return row


def time_methods(methods: dict, queries: torch.Tensor, bank: ReferenceBank, device: torch.device,
                 repeats: int) -> dict[str, float]:
    """Median seconds per call of each matcher; the methods take turns in every repeat."""
    # Warm-up (JS at small K: its K x K signatures, kept with the bank); a method slower than
    # SLOW seconds is timed once more instead of `repeats` times.
    warm = {name: _seconds(lambda m=m: m(queries, bank), device) for name, m in methods.items()}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(repeats):
        for name, m in methods.items():
            if repeat == 0 or warm[name] < SLOW:
                times[name].append(_seconds(lambda m=m: m(queries, bank), device))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--regions", type=int, default=200)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="the features' dtype (half: cosines in half on a GPU, distributions in float32)")
    parser.add_argument("--js-budget", type=float, default=60.0, help="seconds JS may take per image at one size")
    parser.add_argument("--json", type=Path, default=None,
                        help="where the table goes as JSON (default: benchmarks/results/matching-DEVICE-DTYPE.json)")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("matching.py: --device cuda but torch sees no CUDA device")
    out = args.json or Path(__file__).parent / "results" / f"matching-{device.type}-{args.dtype}.json"

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(args.regions, args.dim, generator=g).to(device, dtype)
    methods = {
        "cosine": CosineMatcher("max"),
        "rim kl": RIMMatcher(TEMPERATURE, "kl", 0.0, "max"),
        "rim kl exclude_self": RIMMatcher(TEMPERATURE, "kl", 0.0, "max", exclude_self=True),
        "rim js": RIMMatcher(TEMPERATURE, "js", 0.0, "max"),
    }
    print(f"matching {args.regions} regions, D = {args.dim}, {args.dtype} on {device} "
          f"({torch.get_num_threads()} torch threads, load {load_before:.2f})", flush=True)
    results = []
    js_last: tuple[int, float] | None = None
    for k in args.sizes:
        bank = random_bank(k, args.dim, device, dtype, g)
        pre = precompute(bank, device)
        print(f"K = {k}: precompute {pre['seconds']:.2f} s ({pre['cpu_seconds']:.2f} s of CPU), "
              f"peak RSS {pre['peak_rss_mb']:.0f} MB"
              + (f", peak CUDA {pre['peak_cuda_mb']:.0f} MB" if "peak_cuda_mb" in pre else ""), flush=True)
        estimate = js_last[1] * (k / js_last[0]) ** 2 if js_last else 0.0
        skip = {"rim js": f"skipped: ~{estimate:.0f} s per image (extrapolated) > {args.js_budget:.0f} s budget"} \
            if estimate > args.js_budget else {}
        active = {name: m for name, m in methods.items() if name not in skip}
        seconds = time_methods(active, queries, bank, device, args.repeats)
        if "rim js" in seconds:
            js_last = (k, seconds["rim js"])
        results.append({"K": k, "precompute": pre, "seconds": seconds, "skipped": skip,
                        "ratio_to_cosine": {n: round(s / seconds["cosine"], 2) for n, s in seconds.items()}})
        del bank
    total = time.perf_counter() - started
    load_after = os.getloadavg()[0]

    print(f"\nseconds per image (ratio to cosine), load {load_before:.2f} -> {load_after:.2f}")
    print(f"{'method':<22}" + "".join(f"{'K = ' + str(r['K']):>22}" for r in results))
    for name in methods:
        cells = []
        for r in results:
            if name in r["skipped"]:
                cells.append("skipped")
            else:
                cells.append(f"{r['seconds'][name]:.4f} s (x{r['ratio_to_cosine'][name]:.2f})")
        print(f"{name:<22}" + "".join(f"{c:>22}" for c in cells))
    print(f"{'precompute (once)':<22}" + "".join(f"{r['precompute']['seconds']:>20.2f} s" for r in results))
    print(f"{'  of it CPU time':<22}" + "".join(f"{r['precompute']['cpu_seconds']:>20.2f} s" for r in results))
    print(f"{'  peak RSS':<22}" + "".join(f"{r['precompute']['peak_rss_mb']:>19.0f} MB" for r in results))
    if device.type == "cuda":
        print(f"{'  peak CUDA':<22}" + "".join(f"{r['precompute']['peak_cuda_mb']:>19.0f} MB" for r in results))
    for r in results:
        for name, why in r["skipped"].items():
            print(f"{name} at K = {r['K']}: {why}")
    print(f"whole run {total:.0f} s ({time.process_time():.0f} s of CPU: the rest is waiting for a busy machine)")

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "regions": args.regions, "dim": args.dim, "temperature": TEMPERATURE, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "dtype": args.dtype, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "load_1min": [round(load_before, 2), round(load_after, 2)], "run_seconds": round(total, 1),
        "run_cpu_seconds": round(time.process_time(), 1),
        "results": results,
    }, indent=2) + "\n")
    print(f"table: {out}")


if __name__ == "__main__":
    main()
