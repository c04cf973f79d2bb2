"""`logger=tensorboard`: Lightning's TensorBoardLogger beside the CSV one, offline; one line without tensorboard."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from rim_bench.commands.cli import main


def test_tensorboard_events_hold_the_runs_scores(tmp_path: Path):
    pytest.importorskip("tensorboard")  # the `tensorboard` extra, in `dev`
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["test", "experiment=smoke", "data.max_images=2", "logger=tensorboard", f"output_dir={out}"]) == 0
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    metrics = json.loads((out / "metrics.json").read_text())
    [miou] = events.Scalars("test/mIoU")
    assert miou.value == pytest.approx(metrics["mIoU"], abs=1e-4)  # percent, as in metrics.json
    assert {f"test/iou/{name}" for name in metrics["per_class_iou"]} <= set(events.Tags()["scalars"])
    assert (out / "csv" / "metrics.csv").is_file()  # the CSV log is always written


def test_tensorboard_missing_is_one_line_before_anything_runs(tmp_path: Path, monkeypatch, capsys, no_models):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    assert main(["test", "experiment=smoke", "logger=tensorboard", f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err == ("rim-bench: error: logger=tensorboard: the tensorboard package is not installed; pip install "
                   "'rim-bench[tensorboard]' (or tensorboard), or choose logger=csv\n")
    assert not (tmp_path / "run").exists()


def test_an_unknown_logger_names_the_choices(tmp_path: Path, capsys):
    assert main(["test", "experiment=smoke", "logger=tensorbord", f"output_dir={tmp_path / 'run'}"]) == 2
    assert "tensorboard" in capsys.readouterr().err
