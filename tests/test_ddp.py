"""Two processes (DDP, gloo on CPU) score exactly what one process scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _run(out: Path, *overrides: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "rim_bench.cli", "test", "experiment=smoke", "data.max_images=5",
         "trainer.accelerator=cpu", f"output_dir={out}", "save_predictions=true", *overrides],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def test_two_processes_equal_one_on_an_odd_sized_set(tmp_path: Path):
    single = _run(tmp_path / "one")
    double = _run(tmp_path / "two", "trainer.devices=2", "trainer.strategy=ddp")
    assert single["num_images"] == double["num_images"] == 5  # 5 images on 2 ranks: none padded, none lost
    for key in ("mIoU", "mAcc", "aAcc", "per_class_iou", "per_class_acc"):
        assert double[key] == single[key], key
    assert sorted(p.name for p in (tmp_path / "two" / "predictions").iterdir()) == \
        sorted(p.name for p in (tmp_path / "one" / "predictions").iterdir())
