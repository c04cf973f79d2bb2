"""The training-free LightningModule, built from a config, and the callback that writes its results.

    model = RIMModule.from_config("rim_voc21", **{"proposer.sam.checkpoint": "sam_vit_h.pth"})
    L.Trainer(devices=4, strategy="ddp").test(model, datamodule=BenchmarkDataModule("voc21", root="DATA"))

`rim-bench test`, `rim-bench-lightning test --config ...` and a script like the one above run
this same object. It builds its stages and loads (or builds) its bank in `setup`, for the
vocabulary of the datamodule (or of its config's ``data``); every image is scored exactly once
under any sampler Lightning puts in (`ShardSampler` is kept; a sampler that pads or drops is
refused). mIoU, mAcc, aAcc and each class's IoU are torchmetrics objects logged with `self.log`.
`ResultWriter` (added by `configure_callbacks`) writes metrics.json, config.yaml, predictions
and overlays into ``output_dir``.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch.utils.data import DistributedSampler

from rim_bench.core.config import config_hash, result_spec, save_config
from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.io import atomic_path, atomic_write_json, atomic_write_text, file_in
from rim_bench.core.timing import StageTimer, process_peak_bytes
from rim_bench.core.types import Prediction, Sample
from rim_bench.data.base import MAX_LISTED, BadSample
from rim_bench.data.palette import voc_palette
from rim_bench.run.assembly import Assembly, BankBuild, experiment_config
from rim_bench.run.datamodule import BenchmarkDataModule, ShardSampler, class_list
from rim_bench.run.metrics import SegmentationScore, most_confused, region_confusion_matrix, score_collection
from rim_bench.run.pipeline import SegmentationPipeline
from rim_bench.run.visualize import save_overlay
from rim_bench.stages.references.bank import bank_summary


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
        self.assembly = Assembly(experiment_config(config if config is not None else experiment, overrides))
        self.timer = self.assembly.timer
        self.pipeline: SegmentationPipeline | None = None
        self.classes: list[list[str]] = []
        self.bank_build: BankBuild | None = None
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
        """The resolved config (its ``data`` block is the datamodule's once set up)."""
        return self.assembly.cfg

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
            self.cfg.data = OmegaConf.merge(self.cfg.data, datamodule.data_config())
        self.classes = getattr(datamodule, "classes", None) or class_list(self.cfg.data)
        with self.timer("load models"):
            pipeline = self.assembly.pipeline(self.class_names)
        with self.timer("reference bank"):
            device = self.trainer.strategy.root_device if self._trainer is not None else torch.device("cpu")
            self.bank_build = self.assembly.bank(self.classes, device, rank=self.global_rank, wait=self.global_rank > 0)
            pipeline.set_bank(self.bank_build.bank)
        self.pipeline = pipeline
        build = self.bank_build
        rank_zero_print(f"reference bank: {len(build.bank)} references ({'cached' if build.cached else 'built'}, "
                         f"{build.path}); {bank_summary(build.bank)}")

    def forward(self, sample: Sample) -> Prediction:
        if self.pipeline is None:
            raise RuntimeError("RIMModule: setup() builds the pipeline; run it through a Trainer or call setup('test')")
        return self.pipeline(sample.image, sample.image_id)

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
                    regions = pred.painted_regions
                    self._confmat += region_confusion_matrix(regions, pred.region_labels,
                                                             sample.label.to(regions.device), len(self.classes))
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
            raise DataError(nothing_scored(self.cfg.data.root, int(scores["num_images"]), len(skipped)))
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


class ResultWriter(L.Callback):
    """Writes a run's results into the module's ``output_dir`` (null: the Trainer's log folder):
    ``predictions/<id>.png`` (``save_predictions``, and always for ``predict``), ``overlays/<id>.png``
    (the data set's first ``save_overlays`` images, whichever process scores them), and after a
    test or validation ``metrics.json`` and ``config.yaml``, printing the per-class table and the
    time breakdown (the module's timer then starts afresh: each run's metrics cover that run)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.output_dir = Path(".")
        self._seen = 0  # images seen by this process; with `ShardSampler` the k-th is the data set's rank + k * W
        self._loop_start = self.started

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        cfg = _rim(pl_module).cfg
        self.output_dir = Path(cfg.output_dir or trainer.log_dir or trainer.default_root_dir).expanduser()
        cfg.output_dir = str(self.output_dir)

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
            save_config(module.cfg, self.output_dir / "config.yaml")
            print(f"label maps: {self.output_dir / 'predictions'}/ (label ids in {self.output_dir}/classes.txt)")

    def _write(self, trainer: L.Trainer, module: RIMModule, outputs: list[tuple[Sample, Prediction]],
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
                        image=sample.image.permute(1, 2, 0).numpy(), region_map=pred.region_map.cpu().numpy(),
                        prediction=pred.label_map.cpu().numpy(),
                        label=sample.label.numpy() if sample.label.numel() else None,  # predict: no label
                        class_names=module.class_names, image_id=sample.image_id,
                    )

    def _finish(self, trainer: L.Trainer, module: RIMModule) -> None:
        now = time.perf_counter()
        loop_seconds = now - self._loop_start
        # The wall time from the run's first timed stage: `rim-bench test` opens the data before the Trainer starts.
        started = min(self.started, module.timer.started or self.started)
        # Lightning attaches trainer.datamodule at run time without declaring it
        metrics = run_metrics(module, now - started, loop_seconds, trainer.datamodule)  # type: ignore[attr-defined]
        module.metrics_json = metrics
        if trainer.is_global_zero:
            atomic_write_json(self.output_dir / "metrics.json", metrics)
            save_config(module.cfg, self.output_dir / "config.yaml")
            print(format_results(metrics, module.class_names))
            table = module.timer.table(metrics["seconds"]["total"], metrics["num_images"], loop_seconds)
            print(f"\ntime breakdown\n{table}")
            print(f"\nresults: {self.output_dir}/metrics.json, config: {self.output_dir}/config.yaml")
        module.timer.reset()  # a next validate or test on this module times only itself


def _rim(module: L.LightningModule) -> RIMModule:
    if not isinstance(module, RIMModule):
        raise TypeError(f"ResultWriter writes RIMModule results, not a {type(module).__name__}'s")
    return module


def run_metrics(module: RIMModule, wall: float, loop_seconds: float, datamodule: Any = None) -> dict[str, Any]:
    """The content of metrics.json: scores in percent, the bank used, the images left out, and
    the cost (seconds per stage, peak memory, throughput over the test loop)."""
    res, names, build = module.results, module.class_names, module.bank_build
    assert res is not None and build is not None, "run_metrics comes after a scored epoch"
    dataset = getattr(datamodule, "dataset", None)
    unread = dict(getattr(dataset, "problems", {}))  # left out when the data set was opened (data.skip_bad)
    return {
        "mIoU": _pct(res["mIoU"]), "mAcc": _pct(res["mAcc"]), "aAcc": _pct(res["aAcc"]),
        "per_class_iou": {n: _pct(v) for n, v in zip(names, res["iou"])},
        "per_class_acc": {n: _pct(v) for n, v in zip(names, res["acc"])},
        "num_images": int(res["num_images"]),
        "most_confused": most_confused(res["confmat"], names),
        "result_hash": config_hash(result_spec(module.cfg)),
        "bank": {"path": str(build.path), "cached": build.cached, "num_references": len(build.bank)},
        "skipped": {**unread, **res["skipped"]},  # with data.skip_bad: image id → why
        **cost_metrics(module.timer, wall, int(res["num_images"]), loop_seconds),
    }


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


def save_label_png(label_map: torch.Tensor, path: Path) -> None:
    """Write an ``(H, W)`` label map as a VOC palette PNG (pixel value = class id, 255 = none)."""
    img = Image.fromarray(label_map.to(torch.uint8).cpu().numpy())  # mode "L"
    img.putpalette(voc_palette())  # turns it into mode "P", indices unchanged
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter out of the results; warnings that matter stay."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # One image per step by design; the loader worker count is the user's choice (data.num_workers).
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # Raised inside Lightning 2.6 by torch 2.14's pytree; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")


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


@rank_zero_only
def rank_zero_print(text: str) -> None:
    """Print on the first process only (also before the Trainer exists: Lightning reads the rank from the env)."""
    print(text)


def _pct(value) -> float | None:
    """A [0, 1] tensor → percent rounded to 4 decimals; NaN (class absent) → None."""
    v = float(value)
    return None if v != v else round(100 * v, 4)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
