"""`rim-bench-lightning` (or `python -m rim_bench.commands.lightning`): Lightning's own command line
(LightningCLI) over `RIMModule`, taking the same experiments by name as `rim-bench`.

    rim-bench-lightning test --config smoke                    # = rim-bench test experiment=smoke
    rim-bench-lightning test --model.experiment rim_voc21 --config ddp --trainer.devices 4 \\
        --model.overrides '{"data.root": "DATA", "proposer.sam.checkpoint": "sam_vit_h_4b8939.pth"}'
    rim-bench-lightning validate --config smoke                # the same, logged as val/*
    rim-bench-lightning predict --config smoke \\
        --data rim_bench.run.datamodule.ImageFolderDataModule --data.images '[photos/]' \\
        --data.classes background,sun,leaf,sea,berry,grape      # label maps, no scores
    rim-bench-lightning test --config smoke --print_config

``--config NAME`` is an experiment (``configs/experiment/NAME.yaml``, the same as
``--model.experiment NAME``) or a file of Trainer settings shipped in ``configs/lightning/``
(``cpu``, ``ddp``); a path is a LightningCLI config file as usual. The experiment names the
model and its data (`ExperimentDataModule`, unless ``--data`` says otherwise); rim-bench config
keys go in ``--model.overrides``. There is no ``fit``: the method is training-free. Results
(metrics.json, config.yaml with the resolved rim-bench config, predictions) go to the
``output_dir`` override, else to the logger's folder (``outputs/lightning/<experiment>/version_N``);
the CLI's own config is saved there as ``lightning_config.yaml``. Bad input (a config, data or
weights error) ends with one line on stderr and exit code 2, as with `rim-bench`; a run that fails
takes back the folder it made (`RemoveFailedRunFolder`), keeping any result it wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from rim_bench.core.config_index import CONFIG_DIR, shipped
from rim_bench.core.errors import ConfigError, RimBenchError, disk_error_line, error_line
from rim_bench.core.logs import console_logging, plain_warnings
from rim_bench.core.output_lock import remove_unused
from rim_bench.run.datamodule import SegmentationDataModule
from rim_bench.run.lit_module import RIMModule
from rim_bench.run.runner import lightning_settings

EXIT_USER_ERROR = 2
LOG_DIR = "outputs/lightning"


class RimBenchCLI(LightningCLI):
    """LightningCLI without ``fit``, with a Trainer set up for evaluation."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "fit"}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Without --data: the benchmark the model's experiment names.
        parser.set_defaults({"data": {"class_path": "rim_bench.run.datamodule.ExperimentDataModule"}})

    def before_instantiate_classes(self) -> None:
        # The default logger's runs are grouped by experiment: outputs/lightning/<experiment>/version_N.
        config = self.config[self.subcommand]
        logger = config.trainer.logger
        if getattr(logger, "class_path", "").endswith("CSVLogger") and logger.init_args.get("name") == "lightning_logs":
            logger.init_args.name = Path(config.model.experiment).stem

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        with lightning_settings():  # ``--trainer.devices abc``: one line, as with `rim-bench test`
            return super().instantiate_trainer(**kwargs)


class RemoveFailedRunFolder(L.Callback):
    """When a run fails, remove what the CLI put in its log folder (``version_N/``, its
    ``lightning_config.yaml``), and the folder itself once empty: a failed run leaves no run
    folder behind. Results a run wrote before failing stay (`remove_unused`)."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not trainer.is_global_zero or trainer.log_dir is None:
            return
        folder = Path(trainer.log_dir)
        (folder / "lightning_config.yaml").unlink(missing_ok=True)
        remove_unused(folder, created=True)


def named_configs(args: list[str]) -> list[str]:
    """``--config NAME`` → ``--model.experiment NAME`` for an experiment, or the shipped file
    ``configs/lightning/NAME.yaml``; existing paths and every other argument stay as they are."""
    out: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--config":
            value = next(rest, None)
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            out.append(arg)
            continue
        out += _config_arguments(value)
    return out


def _config_arguments(value: str | None) -> list[str]:
    if value is None or Path(value).expanduser().is_file() or value.lstrip().startswith(("{", "[")):
        return ["--config"] if value is None else ["--config", value]  # LightningCLI says what is wrong
    if value in shipped("experiment"):
        return ["--model.experiment", value]
    if value in shipped("lightning"):
        return ["--config", str(CONFIG_DIR / "lightning" / f"{value}.yaml")]
    raise ConfigError(f"--config {value}: no such file, experiment ({', '.join(shipped('experiment'))}) or "
                      f"Trainer settings ({', '.join(shipped('lightning'))})")


def main(args: list[str] | None = None) -> None:
    console_logging()  # the results tables on stdout, as `rim-bench test` shows them
    plain_warnings()
    try:
        if args is None:  # from the command line: LightningCLI reads sys.argv (given args too, it warns)
            sys.argv[1:] = named_configs(sys.argv[1:])
        RimBenchCLI(
            RIMModule, SegmentationDataModule, subclass_mode_data=True,
            seed_everything_default=False,  # the rim-bench config's `seed` seeds every draw (RIMModule)
            trainer_defaults={
                "enable_checkpointing": False, "enable_model_summary": False,
                "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": LOG_DIR}},
                "callbacks": [RemoveFailedRunFolder()],
            },
            save_config_kwargs={"config_filename": "lightning_config.yaml", "overwrite": True},
            args=None if args is None else named_configs(args),
        )
    except RimBenchError as e:
        print(f"rim-bench-lightning: error: {error_line(e)}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    except OSError as e:  # a full or read-only disk under a cache or result file
        line = disk_error_line(e)
        if line is None:
            raise
        print(f"rim-bench-lightning: error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None


if __name__ == "__main__":
    main()
