"""Wall-clock time per pipeline stage, for the breakdown printed after a run."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch


class StageTimer:
    """Accumulates seconds and call counts per stage name (CUDA is synchronized first)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        _sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            _sync()
            self.seconds[stage] += time.perf_counter() - start
            self.calls[stage] += 1

    def table(self, total: float) -> str:
        """A text table: stage, seconds, share of `total`, calls."""
        rows = [f"{'stage':<20}{'seconds':>10}{'share':>9}{'calls':>8}"]
        for stage, sec in self.seconds.items():
            rows.append(f"{stage:<20}{sec:>10.2f}{100 * sec / max(total, 1e-9):>8.1f}%{self.calls[stage]:>8}")
        rows.append(f"{'total (wall)':<20}{total:>10.2f}{100.0:>8.1f}%")
        return "\n".join(rows)

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
