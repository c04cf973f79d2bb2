"""`rim-bench test`: evaluate one config on one benchmark and write its results.

Steps: (1) resolve the config and seed everything; (2) open and check the data before
any model is loaded; (3) build the stages; (4) build or load the reference bank;
(5) run `Trainer.test`; (6) write metrics.json and config.yaml, print the tables.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from rim_bench.config import config_hash, resolve, result_spec, save_config
from rim_bench.data.base import MAX_LISTED
from rim_bench.data.datamodule import SegmentationDataModule, build_dataset, class_list
from rim_bench.errors import ConfigError, DataError
from rim_bench.io import atomic_write_json, safe_name
from rim_bench.lit_module import RIMTestModule
from rim_bench.metrics import most_confused
from rim_bench.pipeline import build_pipeline, register_builtin_stages
from rim_bench.references.bank import bank_summary
from rim_bench.references.sources import bank_for_config
from rim_bench.registry import ENCODERS, FEATURIZERS, build_stage
from rim_bench.timing import StageTimer, process_peak_bytes
from rim_bench.types import ReferenceBank

# DDP launches each further rank by re-running the command; they must write where rank 0 does.
OUTPUT_DIR_ENV = "RIM_BENCH_OUTPUT_DIR"
LOGGERS = ("csv", "wandb")
WANDB_MODES = ("offline", "online", "disabled")


def run_test(cfg: DictConfig) -> dict:
    """Evaluate `cfg`; returns the content of the metrics.json it writes."""
    wall_start = time.perf_counter()
    # 1. Resolve and seed: every random draw below takes its seed from the config.
    cfg = prepare(cfg)
    rank, world_size = launched_rank()
    if world_size > 1 and cfg.output_dir is None:
        raise ConfigError(f"output_dir: set it when a launcher (srun, torchrun) starts the {world_size} processes, "
                          "so that every rank writes into the same folder (see docs/scaling.md)")
    inherited = os.environ.get(OUTPUT_DIR_ENV) if int(os.environ.get("LOCAL_RANK", "0")) > 0 else None
    started = datetime.now()
    # A folder the user names is checked (and made) now; a new default one only when there is
    # something to write, so a run that fails on its input leaves no empty folder.
    given = output_folder(cfg, inherited) if cfg.output_dir or inherited else None
    timer = StageTimer()

    # 2. Data first, so a wrong path or a bad sample fails before minutes of model loading.
    with timer("data setup"):
        dataset, classes = build_dataset(cfg.data)
        class_names = [names[0] for names in classes]
    for problem in list(dataset.problems.values())[:MAX_LISTED]:  # with data.skip_bad: the ids left out
        rank_zero_print(f"skipped: {problem}")
    if not len(dataset):
        raise DataError(f"{dataset.dir}: none of its {len(dataset.problems)} images can be used; "
                        "`rim-bench check-data` lists why")

    # 3. The stages.
    with timer("load models"):
        pipeline = build_pipeline(cfg, class_names, timer)

    # 4. The reference bank, cached under the hash of what makes it.
    with timer("reference bank"):
        device = build_device(cfg)
        # Ranks started together (srun, torchrun) wait for rank 0's bank instead of all building it.
        bank, bank_dir, hit = bank_for_config(
            cfg, pipeline.featurizer.to(device), pipeline.encoder, classes, device, timer, rank=rank, wait=rank > 0
        )
        pipeline.set_bank(bank)
    rank_zero_print(
        f"reference bank: {len(bank)} references ({'cached' if hit else 'built'}, {bank_dir}); {bank_summary(bank)}"
    )

    # 5. Test.
    output_dir = given or output_folder(cfg, started=started)
    os.environ[OUTPUT_DIR_ENV] = cfg.output_dir = str(output_dir)
    module = RIMTestModule(
        pipeline, class_names, output_dir / "predictions" if cfg.save_predictions else None,
        overlay_dir=output_dir / "overlays" if cfg.save_overlays else None, max_overlays=cfg.save_overlays,
    )
    loggers = _loggers(cfg, output_dir)
    with lightning_settings():
        trainer = L.Trainer(
            accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes,
            strategy=cfg.trainer.strategy, precision=cfg.trainer.precision,
            logger=loggers, default_root_dir=str(output_dir),
            enable_checkpointing=False, enable_model_summary=False,
            use_distributed_sampler=False,  # SegmentationDataModule shards without padding
        )
    if trainer.world_size > len(dataset):
        raise ConfigError(f"trainer: {trainer.world_size} processes for {len(dataset)} images; use at most "
                          f"{len(dataset)} (trainer.devices x trainer.num_nodes)")
    datamodule = SegmentationDataModule(dataset, cfg.data.batch_size, cfg.data.num_workers)
    loop_start = time.perf_counter()
    trainer.test(module, datamodule=datamodule, verbose=False)
    loop_seconds = time.perf_counter() - loop_start
    _finish_wandb(trainer)

    # 6. Results.
    res = module.results
    metrics = {
        "mIoU": _pct(res["mIoU"]), "mAcc": _pct(res["mAcc"]), "aAcc": _pct(res["aAcc"]),
        "per_class_iou": {n: _pct(v) for n, v in zip(class_names, res["iou"])},
        "per_class_acc": {n: _pct(v) for n, v in zip(class_names, res["acc"])},
        "num_images": int(res["num_images"]),
        "most_confused": most_confused(res["confmat"], class_names),
        "result_hash": config_hash(result_spec(cfg)),
        "bank": {"path": str(bank_dir), "cached": hit, "num_references": len(bank)},
        "skipped": {**dataset.problems, **res["skipped"]},  # with data.skip_bad: image id → why
    }
    wall = time.perf_counter() - wall_start
    metrics.update(cost_metrics(timer, wall, metrics["num_images"], loop_seconds))
    if trainer.is_global_zero:
        atomic_write_json(output_dir / "metrics.json", metrics)
        save_config(cfg, output_dir / "config.yaml")
        print(format_results(metrics, class_names))
        print(f"\ntime breakdown\n{timer.table(wall, metrics['num_images'], loop_seconds)}")
        print(f"\nresults: {output_dir}/metrics.json, config: {output_dir}/config.yaml")
    return metrics


def cost_metrics(timer: StageTimer, wall: float, images: int, loop_seconds: float) -> dict:
    """What a run cost: seconds per stage, the framework's and the models' shares, peak
    memory per stage (MB) and throughput over the test loop (all processes' images)."""
    memory = timer.memory_dict()
    memory["host_rss"]["total"] = round(process_peak_bytes() / 2**20, 1)
    return {
        "seconds": {**timer.as_dict(), "total": round(wall, 3)},
        "seconds_split": timer.shares(),
        "peak_memory_mb": memory,
        "throughput": {"images_per_second": round(images / max(loop_seconds, 1e-9), 3),
                       "test_loop_seconds": round(loop_seconds, 3)},
    }


def build_bank(cfg: DictConfig) -> ReferenceBank:
    """`rim-bench build-bank`: build (or find) the bank for the benchmark's vocabulary.

    With ``trainer.devices=N`` (and ``trainer.strategy=ddp``) the classes are shared among
    N processes, which store one shard per (class, subcategory); the first process assembles the bank once.
    """
    wall_start = time.perf_counter()
    cfg = prepare(cfg)
    timer = StageTimer()
    with lightning_settings():
        fabric = L.Fabric(accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices,
                          num_nodes=cfg.trainer.num_nodes, strategy=cfg.trainer.strategy)
    fabric.launch()
    classes = class_list(cfg.data)
    featurizer = build_stage(FEATURIZERS, cfg.featurizer, "featurizer").to(fabric.device)
    encoder = build_stage(ENCODERS, cfg.pooling, "pooling")
    bank, bank_dir, hit = bank_for_config(
        cfg, featurizer, encoder, classes, fabric.device, timer,
        rank=fabric.global_rank, world_size=fabric.world_size, barrier=fabric.barrier,
    )
    if fabric.is_global_zero:
        print(f"reference bank: {len(bank)} references ({'cached' if hit else 'built'}) in {bank_dir}")
        print(bank_summary(bank))
        if (bank_dir / "sheets").is_dir():
            print(f"contact sheets: {bank_dir / 'sheets'}")
        print(f"\ntime breakdown\n{timer.table(time.perf_counter() - wall_start)}")
    return bank


def check_data(cfg: DictConfig, max_listed: int = 50) -> int:
    """Read every sample of the configured data set and print its problems (the first
    `max_listed`, then their count); a `DataError` if there is any."""
    cfg = prepare(cfg)
    cfg.data.skip_bad = True  # list every problem instead of stopping at the first
    dataset, classes = build_dataset(cfg.data)
    problems = list(dataset.check_all())
    for message in problems[:max_listed]:
        print(message)
    if len(problems) > max_listed:
        print(f"... and {len(problems) - max_listed} more problems")
    total = len(dataset) + len(dataset.problems)
    summary = f"{total} images in {dataset.dir}, {len(classes)} classes"
    if problems:
        raise DataError(f"{len(problems)} of {summary} have problems (listed above)")
    print(f"ok: {summary}")
    return 0


def output_folder(cfg: DictConfig, inherited: str | None = None, started: datetime | None = None) -> Path:
    """The run's output folder, created.

    ``output_dir`` (or the folder rank 0 chose, `inherited`) is used as given, unless it holds
    another config's metrics.json (the same config resumes or overwrites); by default a new
    ``outputs/<experiment>-<time started>`` folder, with ``-2``, ``-3``, ... if a run started in
    the same second took that name (created atomically, so two runs never share one).
    """
    if cfg.output_dir or inherited:
        folder = Path(str(cfg.output_dir or inherited)).expanduser()
        _check_not_another_run(folder, cfg)
        _make_folder(folder, exist_ok=True)
        return folder
    base = f"outputs/{safe_name(cfg.experiment or 'default')}-{started or datetime.now():%Y%m%d-%H%M%S}"
    for n in range(1, 10_000):
        folder = Path(base if n == 1 else f"{base}-{n}")
        if _make_folder(folder, exist_ok=False):
            return folder
    raise ConfigError(f"output_dir: {base}-* all exist; set output_dir=PATH")


def _make_folder(folder: Path, exist_ok: bool) -> bool:
    """Create `folder` (and its parents); False if it exists and not `exist_ok`."""
    try:
        folder.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if exist_ok:  # a file, not a folder
            raise ConfigError(f"output_dir: '{folder}' is a file; give a folder") from None
        return False
    except OSError as e:
        raise ConfigError(f"output_dir: cannot create '{folder}' ({e.strerror}); choose a writable folder") from None
    return True


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


def check_cache_dir(cfg: DictConfig) -> None:
    """``cache_dir`` exists (it is created) and is writable: a one-line error otherwise."""
    folder = Path(cfg.cache_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cache_dir: cannot create '{folder}' ({e.strerror}); set cache_dir=PATH (or "
                          "RIM_BENCH_CACHE) to a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cache_dir: '{folder}' is not writable; set cache_dir=PATH (or RIM_BENCH_CACHE) "
                          "to a writable folder")


def rank_zero_print(text: str) -> None:
    """Print on the first process only (also before the Trainer exists: Lightning reads the rank from the env)."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        print(text)


def format_results(metrics: dict, class_names: list[str]) -> str:
    """The per-class IoU / accuracy table and the summary line."""
    width = max(12, *(len(n) for n in class_names)) + 2
    lines = [f"\n{'class':<{width}}{'IoU':>8}{'Acc':>8}"]
    for name in class_names:
        iou, acc = metrics["per_class_iou"][name], metrics["per_class_acc"][name]
        lines.append(f"{name:<{width}}{_fmt(iou):>8}{_fmt(acc):>8}")
    if metrics["most_confused"]:
        lines.append("\nmost confused (true → predicted: share of the true class's pixels)")
        lines += [f"  {c['true']} → {c['predicted']}: {100 * c['share']:.1f}%" for c in metrics["most_confused"]]
    skipped = metrics.get("skipped") or {}
    ids = ", ".join(list(skipped)[:MAX_LISTED]) + (", ..." if len(skipped) > MAX_LISTED else "")
    lines.append(
        f"\nmIoU {metrics['mIoU']:.2f}  mAcc {metrics['mAcc']:.2f}  aAcc {metrics['aAcc']:.2f}  "
        f"({metrics['num_images']} images" + (f"; {len(skipped)} unreadable skipped: {ids})" if skipped else ")")
    )
    return "\n".join(lines)


def _loggers(cfg: DictConfig, output_dir: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(save_dir=str(output_dir), name="csv", version="")]
    if cfg.logger == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(
            project=cfg.wandb.project, group=cfg.wandb.group, name=output_dir.name, save_dir=str(output_dir),
            mode=cfg.wandb.mode, config=OmegaConf.to_container(cfg, resolve=True),
        ))
    return loggers


def prepare(cfg: DictConfig) -> DictConfig:
    """Resolve a copy of `cfg`, check its choices, register the stages and seed everything."""
    _quiet_lightning()
    register_builtin_stages()
    cfg = resolve(cfg.copy())
    _check_choices(cfg)
    check_cache_dir(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    return cfg


def launched_rank() -> tuple[int, int]:
    """This process's global rank and the world size when a launcher started every process
    (torchrun's RANK / WORLD_SIZE, SLURM's SLURM_PROCID / SLURM_NTASKS); (0, 1) otherwise.
    Processes Lightning starts itself run after rank 0 has built the bank, and read it."""
    for rank_var, size_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in os.environ and size_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[size_var])
    return 0, 1


def build_device(cfg: DictConfig) -> torch.device:
    """Where to build references before the Trainer places the models: CUDA if it is allowed and there."""
    wants_gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def _finish_wandb(trainer: L.Trainer) -> None:
    """End this run's W&B run, so that the next run in this process (a sweep point) gets its own."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def _check_choices(cfg: DictConfig) -> None:
    """Values with a fixed set of choices or a range that no stage constructor checks."""
    for key, value, choices in (
        ("logger", cfg.logger, LOGGERS),
        ("wandb.mode", cfg.wandb.mode, WANDB_MODES),
    ):
        if value not in choices:
            raise ConfigError(f"{key}: unknown '{value}' (choose {', '.join(choices)})")
    for key, value, least in (
        ("data.batch_size", cfg.data.batch_size, 1), ("data.num_workers", cfg.data.num_workers, 0),
        ("data.max_images", cfg.data.max_images, 1), ("trainer.num_nodes", cfg.trainer.num_nodes, 1),
        ("trainer.devices", cfg.trainer.devices, 1), ("save_overlays", cfg.save_overlays, 0),
    ):
        if isinstance(value, int) and value < least and not (key == "trainer.devices" and value == -1):
            raise ConfigError(f"{key}: must be at least {least}, got {value}")  # devices=-1: all (Lightning's)


@contextmanager
def lightning_settings():
    """Turn Lightning's complaints about ``trainer.*`` values into one-line config errors."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        yield
    except (MisconfigurationException, ValueError, TypeError, ImportError) as e:  # ImportError: TPUs without torch_xla
        raise ConfigError(f"trainer: {str(e).strip().splitlines()[0]} (check trainer.accelerator, "
                          "trainer.devices, trainer.strategy and trainer.precision)") from None


def _pct(value) -> float | None:
    """A [0, 1] tensor → percent rounded to 4 decimals; NaN (class absent) → None."""
    v = float(value)
    return None if v != v else round(100 * v, 4)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _quiet_lightning() -> None:
    """Keep Lightning's start-up chatter out of the results; warnings that matter stay."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # One image per step by design; the loader worker count is the user's choice (data.num_workers).
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # Raised inside Lightning 2.6 by torch 2.14's pytree; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
