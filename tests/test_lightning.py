"""The Lightning-native entry points: `RIMModule` + `BenchmarkDataModule` in a user's own
Trainer, the LightningCLI, and what they share with `rim-bench test` and `segment`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
from torch.utils.data import DataLoader, DistributedSampler

from rim_bench.commands.cli import main
from rim_bench.core.errors import ConfigError
from rim_bench.run.datamodule import BenchmarkDataModule, ShardSampler, collate_samples
from rim_bench.run.lit_module import RIMModule

REPO = Path(__file__).resolve().parent.parent
SCORES = ("mIoU", "mAcc", "aAcc", "per_class_iou", "per_class_acc", "num_images")


@pytest.fixture(scope="module")
def cli_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`rim-bench test experiment=smoke` on the whole smoke set."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["test", "experiment=smoke", f"output_dir={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    csv = (out / "csv" / "metrics.csv").read_text().splitlines()
    assert len(csv) == 2 and "test/iou/sun" in csv[0] and "test/mIoU" in csv[0]  # one row: all scores together
    return metrics


def test_a_users_trainer_script_gives_what_rim_bench_test_gives(cli_metrics: dict, tmp_path: Path):
    model = RIMModule.from_config("smoke", output_dir=str(tmp_path))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    trainer.test(model, datamodule=BenchmarkDataModule("smoke"), verbose=False)
    written = json.loads((tmp_path / "metrics.json").read_text())
    for key in SCORES:
        assert written[key] == cli_metrics[key], key
    assert written["num_images"] == 24
    assert round(float(trainer.callback_metrics["test/mIoU"]), 4) == round(cli_metrics["mIoU"], 4)
    assert (tmp_path / "config.yaml").is_file()


def test_a_module_run_twice_reports_each_run_alone(tmp_path: Path):
    """validate, a pause, then test on one module: the test's time covers the test, and only it
    loaded nothing (the models and the bank came with the first run)."""
    import time

    model = RIMModule.from_config("smoke", output_dir=str(tmp_path))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    data = BenchmarkDataModule("smoke", max_images=2)
    before = time.perf_counter()
    trainer.validate(model, datamodule=data, verbose=False)
    first = json.loads((tmp_path / "metrics.json").read_text())
    time.sleep(2.0)
    trainer.test(model, datamodule=data, verbose=False)
    after = time.perf_counter()
    second = json.loads((tmp_path / "metrics.json").read_text())
    assert "load models" in first["seconds"] and "load models" not in second["seconds"]
    assert second["seconds"]["total"] < 2.0 and second["num_images"] == first["num_images"] == 2
    assert second["mIoU"] == first["mIoU"]
    # The second run's start-up begins where the first ended: the pause is in it, the first run is not.
    wall = second["wall_seconds"]
    assert wall["start_up_from"] == "end of the previous run in this process"
    assert wall["start_up"] >= 2.0 and wall["whole"] < after - before


@pytest.fixture
def lightning_main(monkeypatch):
    """The LightningCLI entry, called as the `rim-bench-lightning` command would be."""
    from rim_bench.commands.lightning import main as cli

    monkeypatch.setattr(sys, "argv", ["rim-bench-lightning"])
    return cli


def test_the_lightning_cli_gives_what_rim_bench_test_gives(cli_metrics: dict, tmp_path: Path, capsys, lightning_main):
    lightning_main(["test", "--config", "smoke", "--trainer.logger.init_args.save_dir", str(tmp_path),
                    "--trainer.enable_progress_bar", "false"])
    [run] = (tmp_path / "smoke").iterdir()  # the default logger's runs are grouped by experiment
    written = json.loads((run / "metrics.json").read_text())
    for key in SCORES:
        assert written[key] == cli_metrics[key], key
    assert f"mIoU {cli_metrics['mIoU']:.2f}" in capsys.readouterr().out
    assert (run / "lightning_config.yaml").is_file() and (run / "config.yaml").is_file()


def test_the_lightning_cli_takes_experiments_and_trainer_files_by_name(capsys, lightning_main):
    """`--config NAME` is an experiment or a shipped Trainer file, so a wheel install needs no paths;
    the experiment names the data (no --data); there is no `fit`."""
    with pytest.raises(SystemExit) as exit_info:
        lightning_main(["test", "--config", "rim_voc21", "--config", "ddp", "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "experiment: rim_voc21" in printed and "ExperimentDataModule" in printed
    assert "strategy: ddp" in printed and "accelerator: gpu" in printed
    with pytest.raises(SystemExit) as exit_info:
        lightning_main(["test", "--model.experiment", "voc21", "--print_config"])
    assert exit_info.value.code == 0 and "experiment: voc21" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        lightning_main(["fit", "--config", "smoke"])
    assert exit_info.value.code != 0


@pytest.mark.parametrize("args, message", [
    (["--config", "nosuch"], "--config nosuch: no such file, experiment (ade20k, "),
    (["--model.experiment", "nosuch"], "experiment 'nosuch' not found"),
    (["--config", "smoke", "--model.overrides", '{"matcher.name": "foo"}'], "matcher.name: unknown matcher 'foo'"),
])
def test_the_lightning_cli_reports_bad_input_in_one_line(args, message, capsys, lightning_main):
    with pytest.raises(SystemExit) as exit_info:
        lightning_main(["test", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("rim-bench-lightning: error: ")]
    assert message in line


def test_validate_scores_as_test_does(cli_metrics: dict, tmp_path: Path, lightning_main):
    lightning_main(["validate", "--config", "smoke", "--trainer.logger.init_args.save_dir", str(tmp_path),
                    "--trainer.enable_progress_bar", "false"])
    [run] = (tmp_path / "smoke").iterdir()
    assert json.loads((run / "metrics.json").read_text())["mIoU"] == cli_metrics["mIoU"]
    assert "val/mIoU" in (run / "metrics.csv").read_text()


@pytest.mark.parametrize("config", sorted((REPO / "configs/lightning").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_lightning_config_holds_trainer_settings_only(config: Path, capsys, lightning_main):
    import yaml

    assert set(yaml.safe_load(config.read_text())) == {"trainer"}  # the experiment names model and data
    with pytest.raises(SystemExit) as exit_info:
        lightning_main(["test", "--config", "smoke", "--config", config.stem, "--print_config"])
    assert exit_info.value.code == 0 and "trainer:" in capsys.readouterr().out


def test_predict_writes_label_maps_for_an_image_folder(smoke_root: Path, tmp_path: Path):
    from rim_bench.run.datamodule import ImageFolderDataModule

    images = tmp_path / "photos"
    images.mkdir()
    for source in sorted((smoke_root / "JPEGImages").glob("*.jpg"))[:2]:
        (images / source.name).write_bytes(source.read_bytes())
    model = RIMModule.from_config("smoke", output_dir=str(tmp_path / "out"))
    data = ImageFolderDataModule([str(images)], "background,sun,leaf,sea,berry,grape")
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).predict(model, datamodule=data)
    written = sorted(p.name for p in (tmp_path / "out" / "predictions").iterdir())
    assert written == sorted(f"{p.stem}.png" for p in images.iterdir())
    assert (tmp_path / "out" / "classes.txt").read_text().startswith("0 background\n")


def test_the_readme_predict_runs_and_a_failing_one_leaves_no_run_folder(smoke_root: Path, tmp_path: Path, capsys,
                                                                       lightning_main, monkeypatch):
    """README's `predict` (the smoke classes) writes label maps; with a class the smoke bank
    lacks it fails in one line, and its version_N/ folder is gone."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    source = next((smoke_root / "JPEGImages").glob("*.jpg"))
    (tmp_path / "photos" / source.name).write_bytes(source.read_bytes())
    args = ["predict", "--config", "smoke", "--data", "rim_bench.run.datamodule.ImageFolderDataModule",
            "--data.images", "[photos/]", "--trainer.enable_progress_bar", "false", "--data.classes"]
    lightning_main([*args, "background,sun,leaf,sea,berry,grape"])
    assert (tmp_path / f"outputs/lightning/smoke/version_0/predictions/{source.stem}.png").is_file()
    with pytest.raises(SystemExit) as exit_info:
        lightning_main([*args, "background,cat"])
    assert exit_info.value.code == 2 and "no exemplar images for class 'cat'" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "outputs/lightning/smoke").iterdir()] == ["version_0"]


def test_an_image_a_sampler_repeats_is_scored_once(smoke_root: Path, tmp_path: Path):
    dataset = BenchmarkDataModule("smoke", max_images=2)
    dataset.setup()
    loader = DataLoader(dataset.dataset, sampler=[0, 1, 1, 0], collate_fn=collate_samples)
    model = RIMModule.from_config("smoke", output_dir=str(tmp_path))
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).test(model, loader, verbose=False)
    assert json.loads((tmp_path / "metrics.json").read_text())["num_images"] == 2


def test_a_padding_sampler_is_refused_in_one_line():
    from types import SimpleNamespace

    from rim_bench.run.lit_module import _refuse_padding_samplers

    data = list(range(5))
    padded = DataLoader(data, sampler=DistributedSampler(data, num_replicas=2, rank=0, shuffle=False))
    with pytest.raises(ConfigError, match=r"DistributedSampler gives 6 images for 5 \(padded or dropped\)"):
        _refuse_padding_samplers(SimpleNamespace(testing=True, test_dataloaders=[padded]))
    ours = DataLoader(data, sampler=ShardSampler(5, 0, 2))
    _refuse_padding_samplers(SimpleNamespace(testing=True, test_dataloaders=[ours]))
    assert isinstance(ours.sampler, DistributedSampler)  # so Lightning keeps it under use_distributed_sampler=True


def test_segment_after_test_reuses_the_bank_and_the_regions(smoke_root: Path, tmp_path: Path, monkeypatch):
    from rim_bench.run.pipeline import SegmentationPipeline
    from rim_bench.stages.references.exemplars import ExemplarReferences

    common = ["experiment=smoke", f"cache_dir={tmp_path / 'cache'}", f"data.root={smoke_root}"]
    assert main(["test", *common, "data.max_images=2", f"output_dir={tmp_path / 'run'}"]) == 0

    def no_rebuild(*args, **kwargs):
        raise AssertionError("segment recomputed what rim-bench test cached")

    monkeypatch.setattr(ExemplarReferences, "build", no_rebuild)
    monkeypatch.setattr(SegmentationPipeline, "regions", no_rebuild)
    images = [str(p) for p in sorted((smoke_root / "JPEGImages").glob("*.jpg"))[:2]]
    assert main(["segment", *images, "--classes", "background,sun,leaf,sea,berry,grape", *common,
                 "--out", str(tmp_path / "segmented")]) == 0
    assert len(list((tmp_path / "segmented").glob("*_overlay.png"))) == 2


def test_a_new_matcher_is_one_module_and_one_yaml_block(tmp_path: Path, monkeypatch, smoke_root: Path):
    """A matcher module dropped into the matching package's path and a block in default.yaml:
    no import list, no registration call."""
    import shutil

    from omegaconf import OmegaConf

    import rim_bench.stages.matching
    from rim_bench.core.config import CONFIG_DIR, load_config
    from rim_bench.core.registry import MATCHERS
    from rim_bench.run.runner import run_test

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "class_sum_test_matcher.py").write_text(textwrap.dedent('''
        """Sums each region's cosine similarity to every reference of a class."""
        import torch.nn.functional as F

        from rim_bench.core.registry import MATCHERS


        @MATCHERS.register("class_sum")
        class ClassSum:
            def __init__(self, power: float) -> None:
                self.power = power

            def __call__(self, regions, bank):
                sims = (F.normalize(regions, dim=-1) @ F.normalize(bank.features, dim=-1).T).clamp_min(0) ** self.power
                return sims.new_zeros(len(regions), bank.num_classes).index_add_(1, bank.class_ids, sims)
    '''))
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    default = OmegaConf.load(configs / "default.yaml")
    default.matcher.class_sum = {"power": 2.0}  # the one YAML block
    OmegaConf.save(default, configs / "default.yaml")
    # Every built-in matcher registered before the registry is copied (and before the plugin is on
    # the path): a module the copy imports stays imported, its matchers gone from the restored registry.
    MATCHERS.names()
    monkeypatch.setattr(rim_bench.stages.matching, "__path__", [*rim_bench.stages.matching.__path__, str(plugins)])
    monkeypatch.setattr(MATCHERS, "_builders", dict(MATCHERS._builders))  # the registry as it was, after the test
    monkeypatch.setattr(MATCHERS, "_imported", set(MATCHERS._imported))

    cfg = load_config(["experiment=smoke", "matcher.name=class_sum", "data.max_images=2", f"data.root={smoke_root}",
                       f"output_dir={tmp_path / 'run'}"], config_dir=configs)
    metrics = run_test(cfg)
    assert metrics["num_images"] == 2 and metrics["mIoU"] > 0
    assert "class_sum" in MATCHERS.names()


# ----------------------------------------------------------------------------------------- DDP

SCRIPT = """
import sys

import lightning as L

from rim_bench.run.datamodule import BenchmarkDataModule
from rim_bench.run.lit_module import RIMModule

if __name__ == "__main__":
    strategy, devices, out, distributed_sampler = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
    model = RIMModule.from_config("smoke", output_dir=out, save_predictions=True)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False,
                        use_distributed_sampler=distributed_sampler, enable_progress_bar=False)
    trainer.test(model, datamodule=BenchmarkDataModule("smoke", max_images=5), verbose=False)
"""


def _script_run(tmp_path: Path, name: str, strategy: str, devices: int, distributed_sampler: bool) -> dict:
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    out = tmp_path / name
    result = subprocess.run([sys.executable, str(script), strategy, str(devices), str(out),
                             str(int(distributed_sampler))], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sync_dist" not in result.stderr, result.stderr[-3000:]  # metric objects are logged, not tensors
    return json.loads((out / "metrics.json").read_text()) | {"predictions": sorted(
        p.name for p in (out / "predictions").iterdir())}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
@pytest.mark.parametrize("distributed_sampler", [True, False])
def test_two_processes_in_a_users_script_score_each_image_once(tmp_path: Path, strategy: str,
                                                                distributed_sampler: bool):
    single = _script_run(tmp_path, "one", "auto", 1, distributed_sampler)
    double = _script_run(tmp_path, "two", strategy, 2, distributed_sampler)
    assert single["num_images"] == double["num_images"] == 5  # 5 images on 2 ranks: none padded, none lost
    for key in (*SCORES, "predictions"):
        assert double[key] == single[key], key


@pytest.mark.slow
def test_the_lightning_cli_on_two_processes_gives_one_process_numbers(tmp_path: Path):
    runs = {}
    for devices in (1, 2):
        result = subprocess.run(
            [sys.executable, "-m", "rim_bench.commands.lightning", "test", "--config", "smoke",
             "--trainer.devices", str(devices), "--trainer.strategy", "ddp" if devices > 1 else "auto",
             "--trainer.logger.init_args.save_dir", str(tmp_path / str(devices)),
             "--model.overrides", '{"data.max_images": 5}'], capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "sync_dist" not in result.stderr
        [run] = (tmp_path / str(devices) / "smoke").iterdir()
        runs[devices] = json.loads((run / "metrics.json").read_text())
    for key in SCORES:
        assert runs[2][key] == runs[1][key], key


def test_any_trainer_argument_is_a_trainer_key(tmp_path: Path, capsys):
    """`trainer.NAME=VALUE` passes any lightning.Trainer argument; it counts in the result hash
    (fewer batches, another result), and a name the Trainer does not take is one line."""
    from rim_bench.core.config import config_hash, load_config
    from rim_bench.run.methods import result_spec

    out = tmp_path / "two"
    assert main(["test", "experiment=smoke", "trainer.limit_test_batches=2", f"output_dir={out}"]) == 0
    assert json.loads((out / "metrics.json").read_text())["num_images"] == 2
    full, limited = (config_hash(result_spec(load_config(["experiment=smoke", *extra])))
                     for extra in ([], ["trainer.limit_test_batches=2"]))
    assert full != limited
    capsys.readouterr()
    assert main(["test", "experiment=smoke", "trainer.limit_test_batchs=2", f"output_dir={tmp_path / 'typo'}"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("rim-bench: error: trainer.limit_test_batchs: not an argument of lightning.Trainer; "
                           "did you mean trainer.limit_test_batches?")
    assert not (tmp_path / "typo").exists()
