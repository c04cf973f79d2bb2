"""The W&B run that closes a sweep or a suite: its table (and a sweep's plots), in its group.

Each point or cell is already a W&B run of its own (Lightning's `WandbLogger`, in `runner`);
the table and plots exist only once every run has finished, so they go into one more run of
the same group. Offline by default (``wandb.mode``), like the runs.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from rim_bench.core.config import to_dict


def set_wandb_mode(mode: str) -> None:
    """Give W&B's process-wide settings the runs' mode (offline by default). ``wandb.init(mode=...)``
    sets it for the run alone: W&B's own telemetry still read the process-wide settings, and
    at exit queried a server's address (a DNS lookup) in offline mode too."""
    import wandb

    wandb.setup(wandb.Settings(mode=mode))  # type: ignore[arg-type]  # the config's value, checked by W&B


def log_summary(cfg: DictConfig, out: Path, rows: list[dict], plots: list[Path], kind: str = "sweep",
                summary: dict | None = None) -> Path:
    """Log `rows` as the table `kind` ("sweep", "suite") and `plots` as images, with `summary` as the
    run's summary values (by default the best mIoU and its point); returns the run's local folder."""
    import wandb

    set_wandb_mode(cfg.wandb.mode)
    run = wandb.init(project=cfg.wandb.project, group=cfg.wandb.group or out.name, name=f"{out.name}-summary",
                     job_type=f"{kind}-summary", dir=str(out), mode=cfg.wandb.mode,
                     config=to_dict(cfg), reinit="finish_previous")
    try:
        columns = list(rows[0]) if rows else []
        run.log({kind: wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows]),
                 **{f"plots/{p.stem}": wandb.Image(str(p)) for p in plots}})
        if summary is None:
            best = max(rows, key=lambda r: r["mIoU"] if r["mIoU"] is not None else float("-inf"), default=None)
            summary = {"best_mIoU": best["mIoU"], "best_point": best["dir"]} if best is not None else {}
        for key, value in summary.items():
            run.summary[key] = value
        return Path(run.dir).parent
    finally:
        run.finish()
