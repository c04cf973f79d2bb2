#!/usr/bin/env bash
# The matching benchmark and a smoke `rim-bench test` on CUDA, with the same tables as on a CPU.
# One command, a few minutes on one GPU:
#
#     bash benchmarks/gpu.sh            # from the repository root, rim-bench installed
#
# 1. benchmarks/matching.py on cuda in float32, then in float16 (products of unit vectors in
#    half precision, distributions and log-normalizers in float32): RIM / cosine ratios at
#    K = 1k, 10k, 100k, precompute time and peak CUDA memory; JSON tables in benchmarks/results/.
# 2. `rim-bench test experiment=smoke` on the GPU in a fresh cache: its per-stage time table,
#    with peak host RSS and CUDA memory, and its throughput.
# It stops with an error, before running anything, where torch sees no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

python - <<'PY'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu.sh: torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no CUDA device; "
             "run this on a machine with a GPU")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

python benchmarks/matching.py --device cuda --dtype float32
python benchmarks/matching.py --device cuda --dtype float16

work="$(mktemp -d -t rim-bench-gpu-XXXXXX)"
python -m rim_bench.commands.cli test experiment=smoke trainer.accelerator=gpu trainer.devices=1 \
    cache_dir="$work/cache" output_dir="$work/smoke"
python - "$work/smoke/metrics.json" <<'PY'
import json
import sys

metrics = json.load(open(sys.argv[1]))
cuda = metrics["peak_memory_mb"].get("cuda_max_allocated")
if not cuda:
    sys.exit("gpu.sh: the smoke run recorded no CUDA memory: it did not run on the GPU")
print(f"smoke on CUDA: mIoU {metrics['mIoU']:.2f}, {metrics['throughput']['images_per_second']:.2f} images/s, "
      f"peak CUDA {max(cuda.values()):.0f} MB (per stage: {cuda})")
PY
echo "results: benchmarks/results/matching-cuda-float32.json, matching-cuda-float16.json, $work/smoke/metrics.json"
