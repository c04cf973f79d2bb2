"""The training-free LightningModule, built from a config, and the callback that writes its results.

    model = RIMModule.from_config("rim_voc21", **{"proposer.sam.checkpoint": "sam_vit_h.pth"})
    L.Trainer(devices=4, strategy="ddp").test(model, datamodule=BenchmarkDataModule("voc21", root="DATA"))

`rim-bench test`, `rim-bench-lightning test --config ...` and a script like the one above run
this same object. It builds its stages and loads (or builds) its bank in `setup`, for the
vocabulary of the datamodule (or of its config's ``data``); every image is scored exactly once
under any sampler Lightning puts in (`ShardSampler` is kept; a sampler that pads or drops is
refused). mIoU, mAcc, aAcc and each class's IoU are torchmetrics objects logged with `self.log`.
`ResultWriter` (`rim_bench.run.results`, added by `configure_callbacks`) writes metrics.json,
config.yaml, predictions and overlays into ``output_dir``.

The assembled config (``.cfg``) is read-only. What a run decides later is kept beside it: the
``data`` block of the datamodule tested (``.data``) and the folder results go to
(``.output_dir``); `run_config` is the config with both, as config.yaml records it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DistributedSampler

from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.logs import console_logging, quiet_lightning
from rim_bench.core.protocols import Method
from rim_bench.core.types import Prediction, Sample
from rim_bench.data.base import BadSample
from rim_bench.run.assembly import Assembly, experiment_config
from rim_bench.run.datamodule import BenchmarkDataModule, ShardSampler
from rim_bench.run.datasets import class_list
from rim_bench.run.metrics import SegmentationScore, prediction_confusion_matrix, score_collection
from rim_bench.run.results import ResultWriter

log = logging.getLogger(__name__)


class RIMModule(L.LightningModule):
    """Segments each image of a test (or validation) set against a reference bank and scores it.

    Args:
        experiment: an experiment name (``configs/experiment/``) or a YAML path.
        overrides: config values by dotted key, ``{"matcher.rim.temperature": 0.1}``.
        config: a full config instead of `experiment` (`rim-bench test` passes its own).
    """

    def __init__(self, experiment: str = "smoke", overrides: dict[str, Any] | None = None,
                 config: DictConfig | None = None) -> None:
        super().__init__()
        quiet_lightning()
        console_logging(only_if_unconfigured=True)  # a user's own Trainer script sees the results tables
        self.assembly = Assembly(experiment_config(config if config is not None else experiment, overrides))
        self.timer = self.assembly.timer
        self.data: DictConfig = self.cfg.data  # the datamodule's, once set up
        self.output_dir: Path | None = None  # chosen by `rim-bench test` or the ResultWriter
        self.method: Method = self.assembly.method()
        self.pipeline: torch.nn.Module | None = None  # the method's models, once loaded (a submodule: moved with this)
        self.classes: list[list[str]] = []
        self.results: dict[str, Any] | None = None  # the last scored epoch's scores (tensors)
        self.metrics_json: dict[str, Any] | None = None  # and its metrics.json (`run_metrics`)
        self._scored: set[str] = set()
        self.skipped: dict[str, str] = {}  # image id → why it could not be read (`BadSample`, data.skip_bad)
        self._step_end = 0.0  # when the last step ended: the wait until the next is the data's time,
        self._timed_at_step_end = 0.0  # less what other stages timed meanwhile (the ResultWriter's writing)

    @classmethod
    def from_config(cls, config: str | Path | DictConfig = "smoke", **overrides: Any) -> RIMModule:
        """From an experiment name, a YAML path or a config; overrides by dotted key
        (``**{"matcher.rim.temperature": 0.1}``, or ``matcher__rim__temperature=0.1``)."""
        if isinstance(config, DictConfig):
            return cls(config=config, overrides=overrides)
        return cls(str(config), overrides)

    @property
    def cfg(self) -> DictConfig:
        """The resolved config as assembled (read-only; `run_config` adds what the run decided)."""
        return self.assembly.cfg

    def run_config(self) -> DictConfig:
        """The config this run ran: `cfg` with the datamodule's ``data`` and the output folder."""
        output_dir = str(self.output_dir) if self.output_dir is not None else self.cfg.output_dir
        return OmegaConf.merge(self.cfg, {"data": self.data, "output_dir": output_dir})  # type: ignore[return-value]

    @property
    def class_names(self) -> list[str]:
        return [names[0] for names in self.classes]

    def configure_callbacks(self) -> list[L.Callback]:
        return [ResultWriter()]

    def setup(self, stage: str) -> None:
        """Build the stages and the bank for the datamodule's vocabulary (once per module).

        Rank 0 builds a missing bank; the other ranks wait for it (`cached_bank`).
        """
        if self.pipeline is not None:
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if isinstance(datamodule, BenchmarkDataModule):  # the benchmark tested is the datamodule's: config.yaml says so
            self.data = OmegaConf.merge(self.cfg.data, datamodule.data_config())  # type: ignore[assignment]
        self.classes = getattr(datamodule, "classes", None) or class_list(self.data)
        device = self.trainer.strategy.root_device if self._trainer is not None else torch.device("cpu")
        with self.timer("load models"):
            pipeline = self.method.load(device)
        self.method.set_vocabulary(self.classes, device, rank=self.global_rank, wait=self.global_rank > 0)
        self.pipeline = pipeline
        if self.global_rank == 0:
            log.info(self.method.summary())

    def forward(self, sample: Sample) -> Prediction:
        if self.pipeline is None:
            raise RuntimeError("RIMModule: setup() builds the pipeline; run it through a Trainer or call setup('test')")
        return self.method(sample.image, sample.image_id)

    # -- test and validate: scored ---------------------------------------------------------

    def on_test_epoch_start(self) -> None:
        self._start_scoring("test")

    def on_validation_epoch_start(self) -> None:
        self._start_scoring("val")

    def test_step(self, batch: list[Sample | BadSample], batch_idx: int) -> list[tuple[Sample, Prediction]]:  # type: ignore[override]
        return self._score(batch)

    def validation_step(self, batch: list[Sample | BadSample], batch_idx: int) -> list[tuple[Sample, Prediction]]:  # type: ignore[override]
        return self._score(batch)

    def on_test_epoch_end(self) -> None:
        self._finish_scoring()

    def on_validation_epoch_end(self) -> None:
        self._finish_scoring()

    def predict_step(self, batch: list[Sample], batch_idx: int) -> list[tuple[Sample, Prediction]]:
        return [(sample, self(sample)) for sample in batch]

    def _start_scoring(self, prefix: str) -> None:
        _refuse_padding_samplers(self.trainer)
        self.scores = score_collection(self.class_names, prefix=f"{prefix}/").to(self.device)
        # This process's counts, summed per image and handed to the metrics once at the epoch's end:
        # a metric collection's update costs more than the image's whole confusion matrix.
        self._confmat = torch.zeros(len(self.classes), len(self.classes) + 1, dtype=torch.long, device=self.device)
        self._scored, self.skipped = set(), {}
        self.results = None
        self._mark_step_end()

    def _score(self, batch: list[Sample | BadSample]) -> list[tuple[Sample, Prediction]]:
        # Loading and Lightning's loop; "writing" (the ResultWriter, between two steps) is not counted twice.
        waited = time.perf_counter() - self._step_end - (self.timer.timed() - self._timed_at_step_end)
        self.timer.add("data", max(waited, 0.0))
        done = []
        for sample in batch:
            if sample.image_id in self._scored:  # a sampler that repeats an image on this process
                continue
            if isinstance(sample, BadSample):  # unreadable, with data.skip_bad: not scored, reported
                self.skipped[sample.image_id] = sample.problem
                continue
            self._scored.add(sample.image_id)
            pred = self(sample)
            with self.timer("scoring"):
                try:
                    self._confmat += prediction_confusion_matrix(pred, sample.label, len(self.classes))
                except ValueError as e:
                    raise DataError(f"image '{sample.image_id}': {e}") from None
            done.append((sample, pred))
        self._mark_step_end()
        return done

    def _mark_step_end(self) -> None:
        self._step_end, self._timed_at_step_end = time.perf_counter(), self.timer.timed()

    def _finish_scoring(self) -> None:
        # The metric objects themselves, logged once: Lightning computes them (synced across processes)
        # as the epoch ends. Logged at every step instead, they cost ~12 ms an image on the smoke set.
        self.scores.update(confmat=self._confmat, num_images=len(self._scored))
        self.log_dict(self.scores, on_step=False, on_epoch=True)
        leader = self.scores["mIoU"]  # holds the collection's one confusion matrix
        assert isinstance(leader, SegmentationScore)
        scores = leader.all_scores()
        skipped = self._all_skipped()
        if not int(scores["confmat"].sum()):  # every process's counts: each raises alike
            raise DataError(nothing_scored(self.data.root, int(scores["num_images"]), len(skipped)))
        # torchmetrics squeezes one-element outputs: a one-class vocabulary's (1,) IoU comes back 0-d.
        self.results = {k: (v.reshape(-1) if k in ("iou", "acc") else v).cpu() for k, v in scores.items()}
        self.results["skipped"] = skipped

    def _all_skipped(self) -> dict[str, str]:
        """The skipped samples of every process."""
        if self.trainer.world_size == 1:
            return dict(self.skipped)
        gathered: list = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, self.skipped)
        return {k: v for part in gathered for k, v in part.items()}


def nothing_scored(root: str, images: int, skipped: int) -> str:
    """Why a run has no score: no labelled pixel in the `images` read, `skipped` unreadable ones."""
    unread = f" ({skipped} unreadable skipped)" if skipped else ""
    return (f"data.root '{root}': nothing to score: the {images} images read{unread} have no labelled pixel (every "
            "label is 255 or the images could not be read); `rim-bench check-data` lists the problems")


def _refuse_padding_samplers(trainer: L.Trainer) -> None:
    """A sampler that pads (or drops) images would score some twice (or never): refuse it in one line."""
    loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
    for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
        sampler, dataset = getattr(loader, "sampler", None), getattr(loader, "dataset", None)
        if isinstance(sampler, DistributedSampler) and not isinstance(sampler, ShardSampler) \
                and sampler.total_size != len(dataset):  # type: ignore[arg-type]
            raise ConfigError(
                f"the data loader's {type(sampler).__name__} gives {sampler.total_size} images for "
                f"{len(dataset)} (padded or dropped): use BenchmarkDataModule, or a DataLoader with "  # type: ignore[arg-type]
                "rim_bench.run.datamodule.ShardSampler and Trainer(use_distributed_sampler=False)"
            )

