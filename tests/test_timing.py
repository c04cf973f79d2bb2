"""Stage timing and peak memory, with nested stages."""

from __future__ import annotations

import numpy as np

from rim_bench.core.timing import StageTimer, process_peak_bytes


def test_a_stage_peak_covers_its_nested_stages_and_not_the_next_stage():
    timer, other = StageTimer(), StageTimer()
    with timer("outer"):
        with other("inner"):  # another timer: the counter is the process's, shared
            block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
            block += 1
        del block
    with timer("after"):
        small = np.ones(1000)
        small += 1
    grew = other.peak_rss["inner"] - timer.peak_rss["after"]
    assert grew > 48 * 2**20  # the 64 MB block counts in "inner" only ...
    assert timer.peak_rss["outer"] >= other.peak_rss["inner"]  # ... and in the stage around it
    assert process_peak_bytes() >= timer.peak_rss["outer"]
    assert timer.seconds["outer"] >= other.seconds["inner"] > 0 and timer.calls["after"] == 1


def test_framework_and_models_shares_count_top_level_stages_once():
    timer = StageTimer()
    timer.add("data", 1.0)
    timer.add("painting", 2.0)
    with timer("reference bank"):
        with timer("generation"):
            pass
    timer.add("matching", 3.0)
    shares = timer.shares()
    assert shares["framework"] == 3.0
    assert 3.0 <= shares["models"] < 3.5 and "generation" in timer.nested
    text = timer.table(total=10.0, images=4, loop_seconds=2.0)
    assert "throughput 2.00 images/s" in text
    assert "framework (data, region map, painting, scoring, writing) 3.00 s" in text


def test_the_timer_never_asks_whether_cuda_is_available(monkeypatch):
    """With Lightning imported, each `torch.cuda.is_available()` asks NVML again (~0.1 ms without a
    GPU); the timer runs at every stage boundary, so it asks only whether CUDA was initialized."""
    import torch

    def asked():
        raise AssertionError("torch.cuda.is_available() called")

    monkeypatch.setattr(torch.cuda, "is_available", asked)
    timer = StageTimer()
    with timer("a"):
        pass
    assert timer.calls["a"] == 1 and timer.started is not None
    timer.reset()
    assert not timer.seconds and timer.started is None
