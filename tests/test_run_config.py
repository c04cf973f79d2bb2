"""A run's config: read-only once assembled, prepared once, and recorded with what the run decided."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import yaml
from omegaconf.errors import ReadonlyConfigError

from rim_bench.commands.cli import main
from rim_bench.core.config import load_config
from rim_bench.run import assembly, runner
from rim_bench.run.assembly import Assembly
from rim_bench.run.datamodule import BenchmarkDataModule
from rim_bench.run.lit_module import RIMModule


def test_the_assembled_config_is_read_only():
    cfg = Assembly(load_config(["experiment=smoke"])).cfg
    with pytest.raises(ReadonlyConfigError):
        cfg.output_dir = "elsewhere"
    with pytest.raises(ReadonlyConfigError):
        cfg.data.max_images = 3


def test_prepare_runs_once_per_rim_bench_test(tmp_path: Path, monkeypatch):
    calls = []
    prepare = assembly.prepare

    def counted(cfg):
        calls.append(cfg.experiment)
        return prepare(cfg)

    monkeypatch.setattr(assembly, "prepare", counted)  # the Assembly's
    monkeypatch.setattr(runner, "prepare", counted)  # and the runner's own name for it
    assert main(["test", "experiment=smoke", "data.max_images=1", f"output_dir={tmp_path / 'run'}"]) == 0
    assert calls == ["smoke"]


def test_config_yaml_records_the_datamodule_and_the_folder_the_run_chose(tmp_path: Path):
    """The module's config says smoke with all images and no output_dir; the run tested 2 images
    into a run folder of its own under the Trainer's root (no logger: outputs/smoke-<time>/): config.yaml
    says what ran, and the module's config is unchanged."""
    model = RIMModule.from_config("smoke")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        default_root_dir=str(tmp_path))
    trainer.test(model, datamodule=BenchmarkDataModule("smoke", max_images=2), verbose=False)
    (run,) = (tmp_path / "outputs").iterdir()
    assert run.name.startswith("smoke-") and not (tmp_path / "config.yaml").exists()
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["output_dir"] == str(run) and written["data"]["max_images"] == 2
    assert model.cfg.output_dir is None and model.cfg.data.max_images is None
