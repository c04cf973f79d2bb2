"""What the cache checksums cost on a 100k-reference bank (D = 768 float32, as matching.py sizes it).

    python benchmarks/cache_checksum.py [--references 100000] [--dim 768] [--repeats 5]
                                        [--dir /tmp] [--json benchmarks/results/cache-checksum.json]

A bank of random features with one metadata record per reference (as a generated bank has)
is written and read the way `rim_bench.stages.references.bank` did before checksums (safetensors
and JSON, nothing checked) and the way it does now (`write_bank` / `load_bank`: a SHA-256 of
the tensors and one of the JSON file, written with the tensors, both checked on read, and
the features checked to be finite). It prints the median and the best seconds of each over
the repeats (interleaved, so that a change of load hits both alike; on a shared machine the
best is closer to the cost itself), their ratio, and the hash speeds of SHA-256 and BLAKE2b
on the bank's bytes (why SHA-256). The file is read back from the page cache, so the read
ratio is the worst case: reading from a disk or a network file system costs more and the
checksum the same.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from matching import cpu_name  # benchmarks/ is on the path when a script here runs
from safetensors import safe_open
from safetensors.torch import save_file

from rim_bench.core.io import atomic_path, atomic_write_json
from rim_bench.core.types import ReferenceBank
from rim_bench.stages.references.bank import METADATA, TENSORS, load_bank, write_bank

MB = 2**20


def random_bank(k: int, dim: int) -> ReferenceBank:
    """A bank of `k` random references over 20 classes, each with a generated bank's metadata."""
    g = torch.Generator().manual_seed(0)
    classes = torch.randint(0, 20, (k,), generator=g)
    meta = [{"prompt": f"a photo of a thing {i % 500}", "word": "thing", "seed": i, "subcategory": f"thing {i % 500}",
             "mask_area": 1000 + i % 997, "attention_area": 2000 + i % 991} for i in range(k)]
    return ReferenceBank(torch.randn(k, dim, generator=g), classes, torch.arange(k) % 500,
                         [f"c{i}" for i in range(20)], [f"thing {i}" for i in range(500)], meta)


def write_unchecked(bank: ReferenceBank, directory: Path) -> None:
    """`write_bank` as it was before checksums."""
    with atomic_path(directory / TENSORS) as tmp:
        save_file({"features": bank.features.contiguous(), "class_ids": bank.class_ids,
                   "subcategory_ids": bank.subcategory_ids}, str(tmp))
    atomic_write_json(directory / METADATA, {"class_names": bank.class_names,
                                             "subcategory_names": bank.subcategory_names, "meta": bank.meta})


def read_unchecked(directory: Path) -> ReferenceBank:
    """`load_bank` as it was before checksums."""
    with safe_open(str(directory / TENSORS), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads((directory / METADATA).read_text())
    return ReferenceBank(tensors["features"], tensors["class_ids"], tensors["subcategory_ids"],
                         info["class_names"], info["subcategory_names"], info["meta"])


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def hash_speeds(data: memoryview) -> dict[str, float]:
    """GiB/s of each candidate hash over `data`."""
    speeds = {}
    for name in ("sha256", "blake2b"):
        start = time.perf_counter()
        hashlib.new(name, data).digest()
        speeds[name] = round(len(data) / (time.perf_counter() - start) / 2**30, 2)
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where the banks are written (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "cache-checksum.json")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    bank = random_bank(args.references, args.dim)
    size_mb = bank.features.numel() * bank.features.element_size() / MB
    print(f"bank of {args.references} x {args.dim} float32 ({size_mb:.0f} MB of features), {cpu_name()}, "
          f"{torch.get_num_threads()} torch threads, load {load_before:.2f}", flush=True)
    speeds = hash_speeds(memoryview(bank.features.numpy()).cast("B"))
    times: dict[str, list[float]] = {k: [] for k in ("write", "write checked", "read", "read checked")}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        plain, checked = Path(tmp) / "plain", Path(tmp) / "checked"
        plain.mkdir()
        checked.mkdir()
        for _ in range(args.repeats):
            times["write"].append(_seconds(lambda: write_unchecked(bank, plain)))
            times["write checked"].append(_seconds(lambda: write_bank(bank, checked, made_for="benchmark")))
            times["read"].append(_seconds(lambda: read_unchecked(plain)))
            times["read checked"].append(_seconds(lambda: load_bank(checked)))
        assert torch.equal(load_bank(checked).features, bank.features)
    load_after = os.getloadavg()[0]

    results = {}
    print(f"hash speed on the features: sha256 {speeds['sha256']} GiB/s, blake2b {speeds['blake2b']} GiB/s")
    print(f"{'of ' + str(args.repeats) + ' repeats':<20}{'unchecked':>12}{'checked':>12}{'ratio':>8}{'added':>10}")
    for stat, reduce in (("median", statistics.median), ("best", min)):
        for op in ("write", "read"):
            plain_s, checked_s = reduce(times[op]), reduce(times[f"{op} checked"])
            results[f"{op} {stat}"] = {"unchecked_s": round(plain_s, 3), "checked_s": round(checked_s, 3),
                                       "ratio": round(checked_s / plain_s, 2), "added_s": round(checked_s - plain_s, 3)}
            print(f"{op + ' ' + stat:<20}{plain_s:>10.3f} s{checked_s:>10.3f} s{checked_s / plain_s:>8.2f}"
                  f"{checked_s - plain_s:>8.3f} s")
    print(f"load {load_before:.2f} -> {load_after:.2f}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "references": args.references, "dim": args.dim, "features_mb": round(size_mb, 1), "repeats": args.repeats,
        "cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "load_1min": [round(load_before, 2), round(load_after, 2)], "hash_gib_per_s": speeds,
        "seconds": {k: [round(s, 3) for s in v] for k, v in times.items()}, "results": results,
    }, indent=2) + "\n")
    print(f"table: {args.json}")


if __name__ == "__main__":
    main()
