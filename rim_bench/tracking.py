"""The W&B run that closes a sweep: its table and Figure-5 plots, in the sweep's group.

Each point is already a W&B run of its own (Lightning's `WandbLogger`, in `runner`); the
plots exist only once every point has finished, so they go into one more run of the same
group. Offline by default (``wandb.mode``), like the points.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def log_sweep_summary(cfg: DictConfig, out: Path, rows: list[dict], plots: list[Path]) -> Path:
    """Log `rows` as a table and `plots` as images; returns the run's local folder."""
    import wandb

    run = wandb.init(project=cfg.wandb.project, group=cfg.wandb.group or out.name, name=f"{out.name}-summary",
                     job_type="sweep-summary", dir=str(out), mode=cfg.wandb.mode,
                     config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous")
    try:
        columns = list(rows[0]) if rows else []
        run.log({"sweep": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows]),
                 **{f"plots/{p.stem}": wandb.Image(str(p)) for p in plots}})
        best = max(rows, key=lambda r: r["mIoU"] if r["mIoU"] is not None else float("-inf"), default=None)
        if best is not None:
            run.summary["best_mIoU"] = best["mIoU"]
            run.summary["best_point"] = best["dir"]
        return Path(run.dir).parent
    finally:
        run.finish()
