"""proposer.name=sam2: SAM 2's automatic masks (the optional sam2 package; skipped without it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rim_bench.core.errors import ConfigError

pytest.importorskip("sam2", reason="the optional sam2 package (pip install 'rim-bench[sam2]')")

SETTINGS = dict(points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                box_nms_thresh=0.7, crop_n_layers=0)


def test_tiny_sam2_proposes_boolean_masks_as_its_generator_does():
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from rim_bench.stages.proposals.sam2_automatic import Sam2Proposer

    proposer = Sam2Proposer("tiny", None, {"seed": 0}, **SETTINGS, min_area=0)
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 60, 80), dtype=np.uint8))
    masks = proposer(image)
    assert masks.dtype == torch.bool and masks.shape[1:] == (60, 80) and len(masks) >= 1
    records = SAM2AutomaticMaskGenerator(proposer.sam2, output_mode="binary_mask", **SETTINGS).generate(
        image.permute(1, 2, 0).numpy())
    assert torch.equal(masks, torch.from_numpy(np.stack([r["segmentation"] for r in records])))
    assert len(Sam2Proposer("tiny", None, {"seed": 0}, **SETTINGS, min_area=10**9)(image)) == 0


def test_sam2_checkpoint_problems_are_one_line(tmp_path: Path):
    from rim_bench.stages.backbones.sam2 import load_sam2

    with pytest.raises(ConfigError, match=r"^proposer\.sam2\.checkpoint: SAM 2 checkpoint .* not found: download "
                                          r"sam2\.1_hiera_large\.pt"):
        load_sam2("sam2.1_hiera_l", str(tmp_path / "missing.pt"), 0, key="proposer.sam2")
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(ConfigError, match=r"^proposer\.sam2\.checkpoint: .*foreign\.pt is not a sam2\.1_hiera_t "
                                          r"checkpoint"):
        load_sam2("sam2.1_hiera_t", str(foreign), 0, key="proposer.sam2")


@pytest.mark.slow
def test_real_size_sam2_runs_rim_bench_test(tmp_path: Path):
    """`rim-bench test` on the smoke set with SAM 2.1 Hiera-T at its real size (random weights)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from make_real_size_fixtures import make

    checkpoint = make(["sam2_hiera_t"])["sam2_hiera_t"]
    out = tmp_path / "run"
    args = ["experiment=smoke", "data.max_images=2", "cache_regions=false", f"output_dir={out}",
            f"cache_dir={tmp_path / 'cache'}", "proposer.name=sam2", "proposer.sam2.model_type=sam2.1_hiera_t",
            f"proposer.sam2.checkpoint={checkpoint}", "proposer.sam2.points_per_side=4",
            "proposer.sam2.pred_iou_thresh=0.0", "proposer.sam2.stability_score_thresh=0.0"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "rim_bench.commands.cli", "test", *args], capture_output=True,
                            text=True, env=env, timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and 0 <= metrics["mIoU"] <= 100
