"""`rim-bench build-bank`: a sharded build over 2 processes equals a 1-process build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rim_bench.stages.references.bank import load_bank

SUBCATEGORIES = "background: [background, wall]\nsun: [sun]\nleaf: [leaf]\nsea: [sea]\nberry: [berry]\ngrape: [grape]\n"


def _build(tmp_path: Path, cache: str, *overrides: str) -> tuple[Path, str]:
    subs = tmp_path / "subs.yaml"
    subs.write_text(SUBCATEGORIES)
    result = subprocess.run(
        [sys.executable, "-m", "rim_bench.commands.cli", "build-bank", "experiment=smoke",
         f"cache_dir={tmp_path / cache}",
         "references.name=diffusion", "references.diffusion.model=tiny", f"references.diffusion.subcategories={subs}",
         "references.diffusion.image_size=64", "references.diffusion.num_inference_steps=2",
         "references.diffusion.sam.model_type=tiny", "trainer.accelerator=cpu", *overrides],
        capture_output=True, text=True, timeout=600,
        # One thread per process in both runs: Lightning gives each DDP rank cores / processes
        # threads, and another thread count changes float sums (and so a mask pixel or two).
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (tmp_path / cache / "banks").iterdir()
    return folder, result.stdout


@pytest.mark.slow  # DDP subprocesses: about a minute on 2 cores
def test_sharded_build_equals_single_process_build(tmp_path: Path):
    single, out = _build(tmp_path, "one")
    assert "reference bank: 14 references (built)" in out and "contact sheets:" in out
    double, out = _build(tmp_path, "two", "trainer.devices=2", "trainer.strategy=ddp")
    assert single.name == double.name  # devices are not part of the bank's key
    a, b = load_bank(single), load_bank(double)
    assert torch.equal(a.features, b.features) and a.meta == b.meta
    (store,) = (tmp_path / "two" / "references").iterdir()
    assert len(list(store.glob("*/*.safetensors"))) == 7 and not list(double.parent.glob("*.partial"))
    _, again = _build(tmp_path, "one")
    assert "(cached)" in again
