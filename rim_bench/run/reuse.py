"""A run made once: sweeps, comparisons and suites run each config as an ordinary test run in its own
folder, and read a finished one back instead of running it again (`run_or_reuse`), by the hash of what
changes its result (`rim_bench.run.methods.result_spec`)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from rim_bench.core.config import config_hash, resolve
from rim_bench.core.io import set_aside
from rim_bench.core.logs import SUMMARY
from rim_bench.run.methods import result_spec

log = logging.getLogger(__name__)


def runs_hash(configs: list) -> str:
    """A short hash of what a list of configs computes (their result specs), for folder names."""
    return config_hash([result_spec(resolve(cfg.copy())) for cfg in configs], 8)


def run_or_reuse(cfg, run_dir: Path, label: str) -> dict:
    """The metrics of `cfg` run as an ordinary test run in `run_dir`: read back when a finished
    run there was made with the same result-affecting settings, else run now; either way one line
    starting with `label` (e.g. "[2/4] {...}") closes it.
    Sweeps, comparisons and suites resume through this one check."""
    from rim_bench.run.runner import run_test  # lazily: it loads Lightning

    metrics = finished_metrics(run_dir / "metrics.json")
    if metrics is not None and metrics.get("result_hash") == result_hash(cfg):
        log.log(SUMMARY, f"{label}: done before, mIoU {metrics['mIoU']:.2f} → {run_dir}")
        return metrics
    log.info(label)  # above its tables; `run_test` closes with it and the scores, the line --quiet keeps
    cfg.output_dir = str(run_dir)
    return run_test(cfg, label)


def finished_metrics(metrics_file: Path) -> dict | None:
    """A finished run's metrics, or None: no file, or a damaged one (truncated, no or a NaN mIoU),
    which is set aside with a warning so that the run is made again."""
    if not metrics_file.is_file():
        return None
    try:
        metrics = json.loads(metrics_file.read_text())
        if not isinstance(metrics, dict) or not isinstance(metrics.get("mIoU"), (int, float)):
            raise ValueError("no mIoU")
        if not math.isfinite(metrics["mIoU"]):  # a hand edit: no run writes NaN
            raise ValueError(f"mIoU {metrics['mIoU']}")
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        set_aside(metrics_file, e)
        return None
    return metrics


def result_hash(cfg) -> str:
    """The hash of `cfg`'s result-affecting settings, as a run writes it into metrics.json."""
    return config_hash(result_spec(resolve(cfg.copy())))
