"""Two processes (DDP, gloo on CPU) score exactly what one process scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _run(out: Path, *overrides: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "rim_bench.commands.cli", "test", "experiment=smoke", "data.max_images=5",
         "trainer.accelerator=cpu", f"output_dir={out}", "save_predictions=true", *overrides],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow  # DDP subprocesses: about a minute on 2 cores
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


@pytest.mark.slow  # DDP subprocesses: about a minute on 2 cores
def test_ranks_started_together_share_one_bank_build(tmp_path: Path):
    # As under srun: torchrun starts both ranks at once, on an empty cache. Rank 0 builds the
    # bank; rank 1 waits for it instead of building its own; the numbers equal one process's.
    single = _run(tmp_path / "one", f"cache_dir={tmp_path / 'cache-one'}")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "rim_bench.commands.cli",
         "test", "experiment=smoke", "data.max_images=5", "trainer.accelerator=cpu", "trainer.devices=2",
         "trainer.strategy=ddp", f"output_dir={tmp_path / 'two'}", f"cache_dir={tmp_path / 'cache-two'}"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Rank 1 waited, or found rank 0's bank already published: either way it read it and built nothing.
    assert "rank 1: read the reference bank rank 0 built" in result.stderr
    assert len(list((tmp_path / "cache-two" / "banks").iterdir())) == 1  # one bank, no stray .partial
    double = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for key in ("num_images", "mIoU", "per_class_iou"):
        assert double[key] == single[key], key


def test_launched_ranks_need_one_output_folder(monkeypatch, capsys):
    from rim_bench.commands.cli import main

    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert main(["test", "experiment=smoke", "data.max_images=1"]) == 2
    assert "output_dir: set it when a launcher" in capsys.readouterr().err


def test_slurm_examples_name_only_real_config_keys():
    # The sbatch files' key=value arguments, with their shell variables filled in, must load.
    import re

    from rim_bench.core.config import load_config

    repo = Path(__file__).resolve().parent.parent
    for script in sorted((repo / "experiments" / "slurm").glob("*.sbatch")):
        text = re.sub(r"\$\{?(\w+)\}?", lambda m: "2" if m.group(1).startswith("SLURM_N") else "/shared",
                      script.read_text())
        overrides = [w for w in re.findall(r"(?<![-\w])([a-z_][\w.]*=[^\s\"\\)]+)", text) if "." in w.split("=")[0]
                     or w.split("=")[0] in ("experiment", "logger", "output_dir", "save_predictions")]
        assert any(o.startswith("experiment=") for o in overrides), script.name
        load_config(overrides)  # raises ConfigError naming any unknown key or wrong type


def _tiny_bank():
    import torch

    from rim_bench.core.types import ReferenceBank

    return ReferenceBank(torch.ones(2, 3), torch.tensor([0, 1]), torch.tensor([0, 1]), ["a", "b"], ["a/a", "b/b"])


def _wait_in_thread(cache: Path, **kwargs):
    """Start a waiting rank 1 in a thread; returns (thread, outcome dict)."""
    import threading

    from rim_bench.stages.references.bank import cached_bank

    outcome: dict = {}

    def waiter():
        try:
            outcome["bank"] = cached_bank(cache, {"k": 1}, lambda work: None, rank=1, wait=True, poll_seconds=0.02,
                                          **kwargs)
        except Exception as e:  # handed to the test thread
            outcome["error"] = e

    thread = threading.Thread(target=waiter)
    thread.start()
    return thread, outcome


def test_waiting_ranks_get_rank_zeros_bank_or_its_error(tmp_path: Path):
    import time

    from rim_bench.core.config import config_hash
    from rim_bench.core.errors import DataError
    from rim_bench.stages.references.bank import cached_bank

    # Another job's failure on the same bank (a shared cache) does not stop this job's wait.
    other_job = tmp_path / "banks" / f"{config_hash({'k': 1})}.failed-slurm-7-0-0"
    other_job.parent.mkdir()
    other_job.write_text("DataError: another job's error\n")
    thread, outcome = _wait_in_thread(tmp_path)
    time.sleep(0.1)
    cached_bank(tmp_path, {"k": 1}, lambda work: _tiny_bank(), rank=0)
    thread.join(10)
    assert "error" not in outcome and outcome["bank"][2] is True and len(outcome["bank"][0]) == 2

    # Rank 0 fails: the waiting rank stops with rank 0's error instead of waiting forever.
    thread, outcome = _wait_in_thread(tmp_path / "other")
    time.sleep(0.1)

    def broken(work):
        raise DataError("no reference survived")

    with pytest.raises(DataError):
        cached_bank(tmp_path / "other", {"k": 1}, broken, rank=0)
    thread.join(10)
    assert "rank 0 failed to build the reference bank" in str(outcome["error"])
    assert "no reference survived" in str(outcome["error"])

    # Rank 0 failed before this rank began to wait: it stops at once.
    thread, outcome = _wait_in_thread(tmp_path / "other", timeout_s=5)
    thread.join(10)
    assert "rank 0 failed" in str(outcome["error"])

    # Rank 0 fails while publishing (e.g. a full disk): still reported.
    import rim_bench.stages.references.bank as bank_module

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    thread, outcome = _wait_in_thread(tmp_path / "full")
    time.sleep(0.1)
    saved, bank_module.write_bank = bank_module.write_bank, full_disk
    try:
        with pytest.raises(OSError):
            cached_bank(tmp_path / "full", {"k": 1}, lambda work: _tiny_bank(), rank=0)
    finally:
        bank_module.write_bank = saved
    thread.join(10)
    assert "No space left on device" in str(outcome["error"])

    # Nobody builds it (e.g. a cache_dir the nodes do not share): a timeout, not a hang.
    thread, outcome = _wait_in_thread(tmp_path / "lonely", timeout_s=0.2)
    thread.join(10)
    assert "does every node see the same cache_dir" in str(outcome["error"])
