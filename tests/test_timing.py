"""Stage timing and peak memory, with nested stages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rim_bench.core.timing import StageTimer, WallSplit, process_peak_bytes


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


def test_the_table_shows_start_up_and_the_run_and_their_sum():
    timer = StageTimer()
    timer.add("load models", 3.0)
    wall = WallSplit(start_up=8.0, run=2.0)
    text = timer.table(wall.whole, images=4, loop_seconds=wall.run, wall=wall)
    lines = {line.split("  ")[0]: line.split() for line in text.splitlines()}
    assert lines["start-up (wall)"][2:4] == ["8.00", "80.0%"]
    assert lines["test loop (wall)"][3:5] == ["2.00", "20.0%"]
    assert lines["total (wall)"][2:4] == ["10.00", "100.0%"]
    assert lines["load models"][2:4] == ["3.00", "30.0%"]  # a share of the whole wall time
    assert "start-up: from the process start to the test loop (imports, config, data set, models" in text
    assert wall.as_dict() == {"whole": 10.0, "start_up": 8.0, "run": 2.0, "start_up_from": "process start",
                              "run_is": "test loop"}


def test_a_later_run_in_the_same_process_starts_its_start_up_where_the_last_run_ended(monkeypatch):
    from rim_bench.core import clock

    monkeypatch.setattr(clock, "_previous_run_end", None)
    first = WallSplit.ending(now=clock.process_started()[0] + 5.0, run_started=clock.process_started()[0] + 4.0)
    assert first.since == "process start" and first.start_up == pytest.approx(4.0) and first.run == pytest.approx(1.0)
    second = WallSplit.ending(now=clock._previous_run_end + 3.0, run_started=clock._previous_run_end + 1.0)
    assert second.since == "end of the previous run in this process"
    assert (second.start_up, second.run) == (pytest.approx(1.0), pytest.approx(2.0))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the kernel's start time is Linux's")
def test_the_process_start_counts_what_ran_before_rim_bench_was_imported():
    """The start-up includes the interpreter and every import before rim-bench's: here a 1 s sleep."""
    code = ("import time; time.sleep(1.0); from rim_bench.core import clock; import time as t; "
            "print(t.perf_counter() - clock.process_started()[0], clock.process_started()[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert 1.0 <= float(out[0]) < 60 and " ".join(out[1:]) == "process start"
