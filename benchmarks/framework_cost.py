"""The framework's per-image cost next to the method's: painting + scoring / matching on the smoke run.

    python benchmarks/framework_cost.py [--runs 5] [key=value ...]

Each round runs `rim-bench test experiment=smoke` twice in fresh processes: first in an
empty cache (the README's first command: regions computed), then again (regions read from
the region cache). It prints, per run, the microseconds an image of matching, painting and
scoring, their ratio (painting + scoring) / matching and the test loop's images/s, then the
median and range of the ratio; the table is written to
``benchmarks/results/framework-cost.json``. Matching is RIM's closed form on the smoke
bank's 36 references, the cheapest matching any real run does, so the ratio is an upper
bound for real vocabularies (see README, Performance). "painting" is the labelling of regions:
a label map painted for predictions or overlays is timed under "writing" (the smoke run writes
none).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "framework-cost.json"
STAGES = ("matching", "painting", "scoring")


def run_once(cache: Path, out: Path, overrides: list[str]) -> dict:
    """One `rim-bench test` in its own process; its metrics.json."""
    command = [sys.executable, "-c",
               "import sys; from rim_bench.commands.cli import main; sys.exit(main(sys.argv[1:]))",
               "test", "experiment=smoke", f"cache_dir={cache}", f"output_dir={out}", *overrides]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"rim-bench test failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text())


def row(kind: str, metrics: dict) -> dict:
    seconds, images = metrics["seconds"], metrics["num_images"]
    per_image = {stage: round(seconds[stage] * 1e6 / images) for stage in STAGES}
    ratio = (seconds["painting"] + seconds["scoring"]) / seconds["matching"]
    return {"run": kind, **{f"{k}_us": v for k, v in per_image.items()}, "ratio": round(ratio, 3),
            "images_per_second": metrics["throughput"]["images_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds of (empty cache, warm cache) runs")
    args, overrides = parser.parse_known_args()
    rows = []
    print(f"{'run':<8}{'matching us':>13}{'painting us':>13}{'scoring us':>12}{'ratio':>8}{'images/s':>10}")
    for index in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="rim-bench-framework-cost-") as work:
            for kind in ("empty", "warm"):
                r = row(kind, run_once(Path(work) / "cache", Path(work) / f"{kind}-{index}", overrides))
                rows.append(r)
                print(f"{kind:<8}{r['matching_us']:>13}{r['painting_us']:>13}{r['scoring_us']:>12}"
                      f"{r['ratio']:>8.2f}{r['images_per_second']:>10.1f}")
    ratios = [r["ratio"] for r in rows]
    print(f"(painting + scoring) / matching: median {statistics.median(ratios):.2f}, "
          f"range {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} runs")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"overrides": overrides, "runs": rows}, indent=1) + "\n")
    print(f"table: {RESULTS}")


if __name__ == "__main__":
    main()
