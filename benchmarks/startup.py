"""What a command spends importing before it works: ``python -X importtime`` over a rim-bench command,
the cumulative import time of the heavy packages it loads, and the process's wall time.

    python benchmarks/startup.py                      # segment, plan, config on the smoke set
    python benchmarks/startup.py -- test experiment=smoke

Run it on two checkouts (or before and after a change) on the same machine, at the same load: the
numbers are seconds on this machine, not a property of the code alone.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HEAVY = ("torch", "lightning", "torchmetrics", "transformers", "diffusers", "skimage", "scipy", "matplotlib", "wandb")


def import_seconds(stderr: str) -> dict[str, float]:
    """Each top-level package's cumulative import time (seconds) from ``-X importtime``'s lines."""
    found: dict[str, float] = {}
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", line)
        if match and match.group(3) in HEAVY:
            found[match.group(3)] = max(found.get(match.group(3), 0.0), int(match.group(1)) / 1e6)
    return found


def measure(argv: list[str]) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "rim_bench.commands.cli", *argv],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.splitlines()[-1]}")
    return wall, import_seconds(done.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="*", help="one rim-bench command (default: segment, plan and config)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rim-bench-startup-") as tmp:
        image = Path(tmp) / "a.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(image)
        commands = [args.command] if args.command else [
            ["segment", str(image), "--classes", "sun,leaf", "experiment=smoke", "--out", f"{tmp}/seg"],
            ["plan", "experiment=smoke"], ["config", "experiment=smoke"]]
        for argv in commands:
            wall, imports = measure(argv)
            loaded = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in sorted(imports.items(),
                                                                                  key=lambda kv: -kv[1]))
            print(f"rim-bench {argv[0]}: {wall:.2f} s wall; imports: {loaded or 'none of ' + ', '.join(HEAVY)}")


if __name__ == "__main__":
    main()
