"""`rim-bench test`, `rim-bench build-bank` and `rim-bench check-data`: thin fronts over
`RIMModule` and `BenchmarkDataModule` (`rim_bench.run.lit_module`) and `Assembly`.

`run_test`: (1) resolve the config, check the weights (`require_weights`: in seconds) and
pick the output folder; (2) open the data set (a wrong path fails before any model loads)
and build the module, which builds its stages and bank in `setup`; (3) run `Trainer.test`;
`ResultWriter` writes metrics.json and config.yaml and prints the tables.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from rim_bench.core.config import config_hash, to_dict
from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.io import safe_name
from rim_bench.core.logs import SUMMARY, is_quiet, quiet_lightning
from rim_bench.core.output_lock import claim_output, hold_output, launched_rank, new_folder, remove_unused
from rim_bench.core.timing import StageTimer, WallSplit
from rim_bench.core.types import ReferenceBank
from rim_bench.data.base import MAX_LISTED
from rim_bench.run.assembly import Assembly, prepare
from rim_bench.run.datamodule import BenchmarkDataModule
from rim_bench.run.datasets import class_list
from rim_bench.run.lit_module import RIMModule
from rim_bench.run.methods import result_spec
from rim_bench.run.tables import run_cost
from rim_bench.run.weights import require_weights
from rim_bench.stages.references.bank import bank_summary

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

# DDP launches each further rank by re-running the command; they must write where rank 0 does.
OUTPUT_DIR_ENV = "RIM_BENCH_OUTPUT_DIR"
log = logging.getLogger(__name__)


def run_test(cfg: DictConfig, label: str | None = None) -> dict:
    """Evaluate `cfg`; returns the content of the metrics.json it writes, and logs its closing
    line (`SUMMARY`: what ``--quiet`` keeps), which starts with `label` (a sweep's point, say).
    The output folder is held (`hold_output`: no other run writes there) from when it is chosen
    to the end, and a failed run takes back the folder it made, whatever the failure (`output_folder`)."""
    with ExitStack() as held:
        metrics, output_dir = _run_test(cfg, held)
    _log_closing_line(f"{label}: " if label else "", metrics, output_dir)
    return metrics


@rank_zero_only
def _log_closing_line(prefix: str, metrics: dict, output_dir: Path) -> None:
    cost = run_cost(metrics)
    seconds = "" if cost["seconds"] is None else f", {cost['seconds']:.1f} s"
    log.log(SUMMARY, f"{prefix}mIoU {metrics['mIoU']:.2f}  mAcc {metrics['mAcc']:.2f}  aAcc {metrics['aAcc']:.2f}  "
                     f"({metrics['num_images']} images{seconds}) → {output_dir}")


def _run_test(cfg: DictConfig, held: ExitStack) -> tuple[dict, Path]:
    quiet_lightning()
    cfg = prepare(cfg)
    _, world_size = launched_rank()
    if world_size > 1 and cfg.output_dir is None:
        raise ConfigError(f"output_dir: set it when a launcher (srun, torchrun) starts the {world_size} processes, "
                          "so that every rank writes into the same folder (see docs/scaling.md)")
    inherited = os.environ.get(OUTPUT_DIR_ENV) if int(os.environ.get("LOCAL_RANK", "0")) > 0 else None
    trainer_args = trainer_arguments(cfg)  # a misspelt trainer.NAME fails before the data is read
    check_logger(cfg)  # and a logger whose package is missing
    require_weights([cfg])  # and a missing model too, in seconds
    started = datetime.now()
    # A folder the user names is checked (and made) now; a new default one only when there is
    # something to write, so a run that fails on its input leaves no empty folder.
    given = output_folder(cfg, inherited, held=held) if cfg.output_dir or inherited else None

    # Data first, so a wrong path or a bad sample fails before minutes of model loading
    # (the module loads its models in `setup`, under the Trainer).
    module = RIMModule(config=cfg)  # `cfg` is prepared: the module's Assembly keeps it as it is
    datamodule = BenchmarkDataModule.from_config(cfg.data)
    with module.timer("data setup"):
        datamodule.setup("test")  # here, before the Trainer starts other processes
    dataset = datamodule.dataset
    assert dataset is not None  # `setup` opened it
    for problem in list(dataset.problems.values())[:MAX_LISTED]:  # with data.skip_bad: the ids left out
        _print_on_rank_zero(f"skipped: {problem}")
    if not len(dataset):
        raise DataError(f"{dataset.dir}: none of its {len(dataset.problems)} images can be used; "
                        "`rim-bench check-data` lists why")
    output_dir = given or output_folder(cfg, started=started, held=held)
    os.environ[OUTPUT_DIR_ENV] = str(output_dir)
    module.output_dir = output_dir  # beside the read-only config; config.yaml records it (`run_config`)
    with lightning_settings():
        trainer = L.Trainer(**{"enable_checkpointing": False, "enable_model_summary": False,
                               "enable_progress_bar": not is_quiet(), **trainer_args,
                               "logger": _loggers(module.run_config(), output_dir),
                               "default_root_dir": str(output_dir)})
    datamodule.check_world_size(trainer.world_size)  # before Lightning starts the other processes
    trainer.test(module, datamodule=datamodule, verbose=False)
    _finish_wandb(trainer)
    assert module.metrics_json is not None  # written at the end of the test loop, on every rank
    return module.metrics_json, output_dir


@rank_zero_only
def _print_on_rank_zero(text: str) -> None:
    """Print on the first process only (also before the Trainer exists: Lightning reads the rank from the env)."""
    log.info(text)


def build_bank(cfg: DictConfig) -> ReferenceBank:
    """`rim-bench build-bank`: build (or find) the bank for the benchmark's vocabulary.

    With ``trainer.devices=N`` (and ``trainer.strategy=ddp``) the classes are shared among
    N processes, which store one shard per (class, subcategory); the first process assembles the bank once.
    """
    wall_start = time.perf_counter()
    quiet_lightning()
    timer = StageTimer()
    assembly = Assembly(cfg, timer)
    cfg = assembly.cfg
    require_weights([cfg])
    with lightning_settings():
        fabric = L.Fabric(accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices,
                          num_nodes=cfg.trainer.num_nodes, strategy=cfg.trainer.strategy)
    fabric.launch()
    build = assembly.bank(class_list(cfg.data), fabric.device, rank=fabric.global_rank,
                          world_size=fabric.world_size, barrier=fabric.barrier)
    if fabric.is_global_zero:
        state = "cached" if build.cached else "built"
        log.info(f"reference bank: {len(build.bank)} references ({state}) in {build.path}")
        log.info(bank_summary(build.bank))
        if (build.path / "sheets").is_dir():
            log.info(f"contact sheets: {build.path / 'sheets'}")
        wall = WallSplit.ending(time.perf_counter(), wall_start, run_name="bank build", start_up_holds="imports")
        log.info(f"\ntime breakdown\n{timer.table(wall.whole, wall=wall)}")  # shares of the process's wall time
    return build.bank


def output_folder(cfg: DictConfig, inherited: str | None = None, started: datetime | None = None,
                  held: ExitStack | None = None) -> Path:
    """The run's output folder, created, claimed (`claim_output`: new, empty, or an earlier
    test's), and with `held` held until `held` closes (before it is checked, so that no other run
    can finish there between the check and this run's writes); when `held` closes, a failed run's
    folder is taken back (`remove_unused`: the folder if this run made it, else its marker).

    ``output_dir`` (or the folder rank 0 chose, `inherited`) is used as given, unless it holds
    another config's metrics.json (the same config resumes or overwrites); by default a new
    ``outputs/<experiment>-<time started>`` folder, with ``-2``, ``-3``, ... if a run started in
    the same second took that name (created atomically, so two runs never share one).
    """
    if cfg.output_dir or inherited:
        folder = Path(str(cfg.output_dir or inherited)).expanduser()
        created = _make_folder(folder)
    else:
        experiment = safe_name(cfg.experiment or "default")
        folder = new_folder(f"outputs/{experiment}-{started or datetime.now():%Y%m%d-%H%M%S}")
        created = True
    if held is not None:
        held.callback(remove_unused, folder, created)  # the last exit: after the lock is released
        held.enter_context(hold_output(folder))
    claim_output(folder, "test", "output_dir")
    _check_not_another_run(folder, cfg)
    return folder


def _make_folder(folder: Path) -> bool:
    """Create `folder` (and its parents); whether it was made now (False: it was there)."""
    existed = folder.is_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file, not a folder
        raise ConfigError(f"output_dir: '{folder}' is a file; give a folder") from None
    except OSError as e:
        raise ConfigError(f"output_dir: cannot create '{folder}' ({e.strerror}); choose a writable folder") from None
    return not existed


def _check_not_another_run(folder: Path, cfg: DictConfig) -> None:
    """Refuse to write into a folder holding another config's results."""
    import json

    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        return
    try:
        done = json.loads(metrics_file.read_text()).get("result_hash")
    except (OSError, ValueError, AttributeError):
        done = None
    mine = config_hash(result_spec(cfg))
    if done != mine:
        raise ConfigError(f"output_dir: '{folder}' holds the results of another config (result hash {done}, this "
                          f"run's is {mine}); choose another output_dir, or delete {metrics_file} to replace them")


def check_logger(cfg: DictConfig) -> None:
    """A one-line error, before anything runs, when ``logger=tensorboard`` finds no TensorBoard to write with."""
    import importlib.util

    if cfg.logger == "tensorboard" and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        raise ConfigError("logger=tensorboard: the tensorboard package is not installed; pip install "
                          "'rim-bench[tensorboard]' (or tensorboard), or choose logger=csv")


def _loggers(cfg: DictConfig, output_dir: Path) -> list[Logger]:
    from lightning.pytorch.loggers import CSVLogger

    loggers: list[Logger] = [CSVLogger(save_dir=str(output_dir), name="csv", version="")]
    if cfg.logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(output_dir), name="tensorboard", version="",
                                         default_hp_metric=False))
    if cfg.logger == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        from rim_bench.run.tracking import set_wandb_mode

        set_wandb_mode(cfg.wandb.mode)
        loggers.append(WandbLogger(
            project=cfg.wandb.project, group=cfg.wandb.group, name=output_dir.name, save_dir=str(output_dir),
            mode=cfg.wandb.mode, config=OmegaConf.to_container(cfg, resolve=True),
        ))
    return loggers


def trainer_arguments(cfg: DictConfig) -> dict[str, Any]:
    """The config's ``trainer`` block as `lightning.Trainer` arguments: default.yaml's keys and any
    other ``trainer.NAME=VALUE``; a name the Trainer does not take is a one-line error."""
    import difflib
    import inspect

    args = to_dict(cfg.trainer)
    known = list(inspect.signature(L.Trainer.__init__).parameters)
    for name in args:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(f"trainer.{name}: not an argument of lightning.Trainer"
                              + (f"; did you mean trainer.{close[0]}?" if close else ""))
    return args


def _finish_wandb(trainer: L.Trainer) -> None:
    """End this run's W&B run, so that the next run in this process (a sweep point) gets its own."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


@contextmanager
def lightning_settings():
    """Turn Lightning's complaints about ``trainer.*`` values into one-line config errors."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        yield
    except (MisconfigurationException, ValueError, TypeError, ImportError) as e:  # ImportError: TPUs without torch_xla
        raise ConfigError(f"trainer: {str(e).strip().splitlines()[0]} (check trainer.accelerator, "
                          "trainer.devices, trainer.strategy and trainer.precision)") from None
