"""A run's results, written: metrics.json, config.yaml, predictions, overlays and the tables.

`ResultWriter` is the callback `RIMModule` adds; `run_metrics` is metrics.json's content,
`cost_metrics` its cost part, `format_results` the per-class table logged after a run, and
`rim_bench.run.visualize.save_label_png` a prediction's label PNG (also for `rim-bench segment`).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L
from omegaconf import DictConfig

from rim_bench.core.config import config_hash, save_config
from rim_bench.core.errors import ConfigError
from rim_bench.core.io import atomic_write_json, atomic_write_text, file_in, safe_name
from rim_bench.core.output_lock import claim_output, new_folder, remove_unused
from rim_bench.core.protocols import Method
from rim_bench.core.timing import StageTimer, WallSplit, process_peak_bytes
from rim_bench.core.types import Prediction, Sample
from rim_bench.data.base import MAX_LISTED
from rim_bench.run.methods import result_spec
from rim_bench.run.metrics import most_confused
from rim_bench.run.visualize import save_label_png, save_overlay

log = logging.getLogger(__name__)


@runtime_checkable
class ScoredModule(Protocol):
    """What the writer reads of the module it writes for (`RIMModule`)."""

    cfg: DictConfig
    timer: StageTimer
    class_names: list[str]
    results: dict[str, Any] | None
    method: Method
    metrics_json: dict[str, Any] | None
    output_dir: Path | None

    def run_config(self) -> DictConfig: ...


# What a Lightning logger or the LightningCLI writes into the logger's own run folder (``version_N/``),
# which the results share.
LIGHTNING_FILES = ("lightning_config.yaml", "hparams.yaml", "metrics.csv", "events.out.tfevents.*", "checkpoints")


class ResultWriter(L.Callback):
    """Writes a run's results into the module's ``output_dir`` (null: the logger's own run folder,
    ``version_N/``, or without one a new ``<default_root_dir>/outputs/<experiment>-<time>/``: never
    loose into the current directory; the folder claimed as `claim_output` says):
    ``predictions/<id>.png`` (``save_predictions``, and always for ``predict``), ``overlays/<id>.png``
    (the data set's first ``save_overlays`` images, whichever process scores them), and after a
    test or validation ``metrics.json`` and ``config.yaml``, logging the per-class table and the
    time breakdown (the module's timer then starts afresh: each run's metrics cover that run)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.output_dir = Path(".")
        self.created = False  # whether this writer made its folder (taken back if the run fails)
        self._seen = 0  # images seen by this process; with `ShardSampler` the k-th is the data set's rank + k * W
        self._loop_start = self.started

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        module = _rim(pl_module)
        log_dir = trainer.log_dir  # on every process: Lightning broadcasts it
        chosen, problem = None, None
        if trainer.is_global_zero:  # chooses, makes and claims the folder; the other processes take its word
            try:
                chosen = str(self._folder(module, log_dir, trainer.default_root_dir, stage))
            except ConfigError as e:
                problem = str(e)
        chosen, problem = trainer.strategy.broadcast((chosen, problem))
        if problem is not None:
            raise ConfigError(problem)
        assert chosen is not None
        self.output_dir = module.output_dir = Path(chosen)

    def _folder(self, module: ScoredModule, log_dir: str | None, root: str, stage: str) -> Path:
        """The run's folder (see the class doc), created and claimed."""
        given = module.output_dir or module.cfg.output_dir
        tolerated: tuple[str, ...] = ()
        if not given and log_dir is not None and Path(log_dir).resolve() != Path(root).resolve():
            given, tolerated = log_dir, LIGHTNING_FILES  # a logger's run folder, made for this run
        if given:
            folder = Path(given).expanduser()
            self.created = self.created or not folder.is_dir()
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"output_dir: cannot create '{folder}' ({e.strerror or e}); choose a writable "
                                  "folder") from None
        else:
            experiment = safe_name(module.cfg.experiment or "default")
            folder = new_folder(Path(root) / "outputs" / f"{experiment}-{datetime.now():%Y%m%d-%H%M%S}")
            self.created = True
        claim_output(folder, "predict" if stage == "predict" else "test", "output_dir", tolerated=tolerated)
        return folder

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero and self.created:  # a failed run leaves no folder it made
            remove_unused(self.output_dir, created=True)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loop_start = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loop_start = time.perf_counter()

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._write(trainer, _rim(pl_module), outputs, predictions=_rim(pl_module).cfg.save_predictions)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self.on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._write(trainer, _rim(pl_module), outputs, predictions=True)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, _rim(pl_module))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._finish(trainer, _rim(pl_module))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = _rim(pl_module)
        if trainer.is_global_zero:
            atomic_write_text(self.output_dir / "classes.txt",
                              "".join(f"{i} {name}\n" for i, name in enumerate(module.class_names)))
            save_config(module.run_config(), self.output_dir / "config.yaml")
            log.info(f"label maps: {self.output_dir / 'predictions'}/ (label ids in {self.output_dir}/classes.txt)")

    def _write(self, trainer: L.Trainer, module: ScoredModule, outputs: list[tuple[Sample, Prediction]],
               predictions: bool) -> None:
        max_overlays = module.cfg.save_overlays
        for sample, pred in outputs:
            index = trainer.global_rank + self._seen * trainer.world_size
            self._seen += 1
            with module.timer("writing"):
                if predictions:
                    save_label_png(pred.label_map, file_in(self.output_dir / "predictions", sample.image_id, ".png"))
                if index < max_overlays:
                    save_overlay(
                        file_in(self.output_dir / "overlays", sample.image_id, ".png"),
                        image=sample.image.permute(1, 2, 0).numpy(),
                        region_map=pred.region_map.cpu().numpy() if pred.region_map is not None else None,
                        prediction=pred.label_map.cpu().numpy(),
                        label=sample.label.numpy() if sample.label.numel() else None,  # predict: no label
                        class_names=module.class_names, image_id=sample.image_id,
                    )

    def _finish(self, trainer: L.Trainer, module: ScoredModule) -> None:
        now = time.perf_counter()
        wall = WallSplit.ending(now, self._loop_start)  # the process's whole wall time: start-up + the test loop
        # The wall time from the run's first timed stage: `rim-bench test` opens the data before the Trainer starts.
        started = min(self.started, module.timer.started or self.started)
        # Lightning attaches trainer.datamodule at run time without declaring it
        metrics = run_metrics(module, now - started, wall, trainer.datamodule)  # type: ignore[attr-defined]
        module.metrics_json = metrics
        if trainer.is_global_zero:
            atomic_write_json(self.output_dir / "metrics.json", metrics)
            save_config(module.run_config(), self.output_dir / "config.yaml")
            log.info(format_results(metrics, module.class_names))
            table = module.timer.table(wall.whole, metrics["num_images"], wall.run, wall=wall)
            log.info(f"\ntime breakdown\n{table}")
            log.info(f"\nresults: {self.output_dir}/metrics.json, config: {self.output_dir}/config.yaml")
        module.timer.reset()  # a next validate or test on this module times only itself


def _rim(module: L.LightningModule) -> ScoredModule:
    if not isinstance(module, ScoredModule):
        raise TypeError(f"ResultWriter writes RIMModule results, not a {type(module).__name__}'s")
    return module


def run_metrics(module: ScoredModule, timed: float, wall: WallSplit, datamodule: Any = None) -> dict[str, Any]:
    """The content of metrics.json: scores in percent, the bank used, the settings chosen at run
    time (``resolved``: e.g. the T of ``temperature: auto``), the images left out, and the cost
    (seconds per stage, `timed` from the first stage, the whole wall time split as `wall` says,
    peak memory, throughput over the test loop)."""
    res, names = module.results, module.class_names
    assert res is not None, "run_metrics comes after a scored epoch"
    dataset = getattr(datamodule, "dataset", None)
    unread = dict(getattr(dataset, "problems", {}))  # left out when the data set was opened (data.skip_bad)
    return {
        "mIoU": _pct(res["mIoU"]), "mAcc": _pct(res["mAcc"]), "aAcc": _pct(res["aAcc"]),
        "per_class_iou": {n: _pct(v) for n, v in zip(names, res["iou"])},
        "per_class_acc": {n: _pct(v) for n, v in zip(names, res["acc"])},
        "num_images": int(res["num_images"]),
        "most_confused": most_confused(res["confmat"], names),
        "result_hash": config_hash(result_spec(module.run_config())),
        **module.method.record(),  # its bank (a per-pixel method has none), the settings it chose at run time
        "skipped": {**unread, **res["skipped"]},  # with data.skip_bad: image id → why
        **cost_metrics(module.timer, timed, int(res["num_images"]), wall),
    }


def cost_metrics(timer: StageTimer, timed: float, images: int, wall: WallSplit) -> dict:
    """What a run cost: seconds per stage (``total``: `timed`, the wall time from its first stage), the
    framework's and the models' shares, the process's whole wall time split into start-up and the test
    loop (``wall_seconds``), peak memory per stage (MB) and throughput over the test loop (all processes' images)."""
    memory = timer.memory_dict()
    memory["host_rss"]["total"] = round(process_peak_bytes() / 2**20, 1)
    loop_seconds = wall.run
    return {
        "seconds": {**timer.as_dict(), "total": round(timed, 3)},
        "wall_seconds": wall.as_dict(),
        "seconds_split": timer.shares(),
        "peak_memory_mb": memory,
        "throughput": {"images_per_second": round(images / max(loop_seconds, 1e-9), 3),
                       "test_loop_seconds": round(loop_seconds, 3)},
    }


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


def _pct(value) -> float | None:
    """A [0, 1] tensor → percent rounded to 4 decimals; NaN (class absent) → None."""
    v = float(value)
    return None if v != v else round(100 * v, 4)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
