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
    # Caches of their own: the two processes must compute the regions, not read the first run's.
    single = _run(tmp_path / "one", f"cache_dir={tmp_path / 'cache-one'}", "save_overlays=3")
    double = _run(tmp_path / "two", "trainer.devices=2", "trainer.strategy=ddp", f"cache_dir={tmp_path / 'cache-two'}",
                  "save_overlays=3")
    assert single["num_images"] == double["num_images"] == 5  # 5 images on 2 ranks: none padded, none lost
    for key in ("mIoU", "mAcc", "aAcc", "per_class_iou", "per_class_acc"):
        assert double[key] == single[key], key
    for folder in ("predictions", "overlays"):
        assert sorted(p.name for p in (tmp_path / "two" / folder).iterdir()) == \
            sorted(p.name for p in (tmp_path / "one" / folder).iterdir())
    assert len(list((tmp_path / "two" / "overlays").iterdir())) == 3  # the data set's first 3, not 3 a process


def test_ranks_started_together_share_one_bank_build(tmp_path: Path):
    # As under srun: torchrun starts both ranks at once, on an empty cache. Rank 0 builds the
    # bank; rank 1 waits for it instead of building its own; the numbers equal one process's.
    single = _run(tmp_path / "one", f"cache_dir={tmp_path / 'cache-one'}")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rim_bench.cli",
         "test", "experiment=smoke", "data.max_images=5", "trainer.accelerator=cpu", "trainer.devices=2",
         "trainer.strategy=ddp", f"output_dir={tmp_path / 'two'}", f"cache_dir={tmp_path / 'cache-two'}"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1: waiting for rank 0 to build the reference bank" in result.stderr
    assert len(list((tmp_path / "cache-two" / "banks").iterdir())) == 1  # one bank, no stray .partial
    double = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for key in ("num_images", "mIoU", "per_class_iou"):
        assert double[key] == single[key], key


def test_launched_ranks_need_one_output_folder(monkeypatch, capsys):
    from rim_bench.cli import main

    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert main(["test", "experiment=smoke", "data.max_images=1"]) == 2
    assert "output_dir: set it when a launcher" in capsys.readouterr().err


def test_slurm_examples_name_only_real_config_keys():
    # The sbatch files' key=value arguments, with their shell variables filled in, must load.
    import re

    from rim_bench.config import load_config

    repo = Path(__file__).resolve().parent.parent
    for script in sorted((repo / "experiments" / "slurm").glob("*.sbatch")):
        text = re.sub(r"\$\{?(\w+)\}?", lambda m: "2" if m.group(1).startswith("SLURM_N") else "/shared",
                      script.read_text())
        overrides = [w for w in re.findall(r"(?<![-\w])([a-z_][\w.]*=[^\s\"\\)]+)", text) if "." in w.split("=")[0]
                     or w.split("=")[0] in ("experiment", "logger", "output_dir", "save_predictions")]
        assert any(o.startswith("experiment=") for o in overrides), script.name
        load_config(overrides)  # raises ConfigError naming any unknown key or wrong type
