"""Issue 20: bounded work. Extreme image sizes (case 7), signals (case 7), a dead rank 0
(case 8) and random sweeps over huge grids (case 9) end in seconds, not hours."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import smoke_copy_args, split_ids
from PIL import Image

from rim_bench.commands.cli import main
from rim_bench.commands.sweep import SweepSpec, expand
from rim_bench.core.errors import DataError
from rim_bench.stages.features.dense import model_input_size
from rim_bench.stages.references.bank import cached_bank

REPO = Path(__file__).resolve().parent.parent
MAX_LONG_SIDE = 2048  # mmseg's Resize(scale=(2048, short side), keep_ratio=True)


@contextmanager
def _model_inputs(featurizer: torch.nn.Module) -> Iterator[list[tuple[int, ...]]]:
    """The shapes of what `featurizer`'s backbone is given meanwhile; a side beyond the cap
    fails before the model runs (uncapped, these inputs take minutes)."""
    shapes: list[tuple[int, ...]] = []

    def record(module, args, kwargs):
        shape = tuple(kwargs["pixel_values"].shape)
        shapes.append(shape)
        assert max(shape[-2:]) <= MAX_LONG_SIDE, f"the model is given {shape}"

    hook = featurizer.backbone.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield shapes
    finally:
        hook.remove()


def test_case7_model_input_caps_the_long_side_as_mmseg():
    assert model_input_size(2, 3000, 128, 14) == (14, 2044)  # not 126 x 192,000
    assert model_input_size(1000, 8000, 448, 14) == (252, 2044)  # scale min(2048 / 8000, 448 / 1000)
    assert model_input_size(375, 500, 448, 14) == (448, 602)  # the cap leaves ordinary images alone
    assert model_input_size(1024, 2048, 1024, 16) == (1024, 2048)


def test_case7_featurizer_input_of_a_sliver_image_is_capped(tiny_featurizer):
    with _model_inputs(tiny_featurizer) as shapes:
        feats = tiny_featurizer(torch.randint(0, 256, (3, 2, 300), dtype=torch.uint8))
    (shape,) = shapes
    assert shape[-2:] == (16, MAX_LONG_SIDE) and feats.shape == (32, 2, MAX_LONG_SIDE // 8)


def test_case7_api_segments_a_2x5000_array_at_its_own_size():
    from rim_bench import RIM

    rim = RIM.from_config("smoke")
    rim.set_vocabulary(["background", "sun", "leaf"])
    with _model_inputs(rim.pipeline.featurizer) as shapes:
        result = rim.segment(np.random.default_rng(0).integers(0, 256, (2, 5000, 3), dtype=np.uint8))
    assert shapes and result.label_map.shape == result.region_map.shape == (2, 5000)  # scored at full size


@pytest.mark.parametrize("size", [(2, 3000), (3000, 2), (1, 5000)])
def test_case7_sam_proposes_regions_for_a_sliver_image(size):
    """SAM's own resize (long side to 256 for the tiny model, 1024 for real ones) left a 0-pixel side."""
    from rim_bench.stages.proposals.sam_automatic import SamProposer

    proposer = SamProposer("tiny", None, {"seed": 0}, points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0,
                           stability_score_thresh=0.0, box_nms_thresh=0.7, crop_n_layers=0, min_area=0)
    masks = proposer(torch.randint(0, 256, (3, *size), dtype=torch.uint8))
    assert masks.shape[1:] == size and masks.flatten(1).any(1).all()  # no mask of the padding alone


def test_case7_check_data_warns_about_extreme_sizes(data: Path, capsys):  # noqa: F811 - the fixture
    first, second = split_ids(data)[:2]
    Image.fromarray(np.zeros((2, 300, 3), dtype=np.uint8)).save(data / "JPEGImages" / f"{first}.jpg")
    Image.fromarray(np.zeros((2, 300), dtype=np.uint8)).save(data / "SegmentationClass" / f"{first}.png")
    Image.fromarray(np.zeros((40, 900, 3), dtype=np.uint8)).save(data / "JPEGImages" / f"{second}.jpg")
    Image.fromarray(np.zeros((40, 900), dtype=np.uint8)).save(data / "SegmentationClass" / f"{second}.png")
    assert main(["check-data", *smoke_copy_args(data)]) == 0  # warnings, not errors: both are scored
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2
    assert f"{first}.jpg' is 2x300, a side under 16 px" in warnings[0]
    assert f"{second}.jpg' is 40x900, an aspect ratio over 10:1" in warnings[1]
    last = out.splitlines()[-1]
    assert last.startswith("ok: ") and last.endswith(" 6 classes (2 of them of extreme size or shape, warned about "
                                                     "above)")


# A run whose second image never finishes: a stage that would take hours, inside Lightning's
# test loop, where its own SIGTERM handler used to swallow the signal.
STALLED_RUN = """
import pathlib, sys, time
from rim_bench.commands.cli import main
from rim_bench.stages.proposals.superpixels import SuperpixelProposer
propose, calls = SuperpixelProposer.__call__, []
def stall(self, image):
    calls.append(1)
    while len(calls) == 2:
        pathlib.Path(sys.argv[1]).touch()
        time.sleep(0.01)
    return propose(self, image)
SuperpixelProposer.__call__ = stall
sys.exit(main(sys.argv[2:]))
"""


def test_case7_sigterm_stops_a_run_in_seconds_in_one_line(smoke_root: Path, tmp_path: Path):
    """As `timeout` sends it, to a real process: it used to run on (Lightning only noted it)."""
    marker, cache, out = tmp_path / "stalled", tmp_path / "cache", tmp_path / "run"
    env = {**os.environ, "RIM_BENCH_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", STALLED_RUN, str(marker), "test", "experiment=smoke", f"data.root={smoke_root}",
               "data.max_images=3", f"output_dir={out}"]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        try:
            deadline = time.monotonic() + 240
            while not marker.exists() and run.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert marker.exists(), run.communicate(timeout=10)[1] if run.poll() is not None else "never stalled"
            run.send_signal(signal.SIGTERM)
            _, err = run.communicate(timeout=15)
        finally:
            if run.poll() is None:  # still running: the signal was ignored
                run.kill()
    assert err.strip().splitlines()[-1] == "rim-bench: interrupted by SIGTERM", err
    assert "Traceback" not in err and run.returncode == 143
    assert (cache / "regions").is_dir() and not list(cache.rglob("*.tmp"))  # whole entries only
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_case7_a_signal_inside_the_test_loop_ends_the_command(smoke_root: Path, tmp_path: Path, capsys,
                                                               monkeypatch, signum):
    """The same in this process (no start-up cost): SIGINT used to end in Lightning's exit(1)."""
    from rim_bench.stages.proposals.superpixels import SuperpixelProposer

    propose, calls = SuperpixelProposer.__call__, []

    def signalled(self, image):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signum)
            deadline = time.monotonic() + 10  # a long stage, bounded so that the old code fails instead of hanging
            while time.monotonic() < deadline:
                time.sleep(0.01)
        return propose(self, image)

    monkeypatch.setattr(SuperpixelProposer, "__call__", signalled)
    before = signal.getsignal(signum)
    code = main(["test", "experiment=smoke", f"data.root={smoke_root}", "data.max_images=3", "cache_regions=false",
                 f"output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 128 + signum and err.strip().splitlines()[-1] == f"rim-bench: interrupted by {signum.name}"
    assert "Traceback" not in err and signal.getsignal(signum) == before  # pytest's handlers are back


# Rank 0 builds a bank that never finishes (until it is killed).
RANK0 = """
import sys, time
from pathlib import Path
from rim_bench.stages.references.bank import cached_bank
cached_bank(Path(sys.argv[1]), {"k": 1}, lambda work: time.sleep(3600), rank=0)
"""


def _wait_in_thread(cache: Path, **kwargs) -> tuple[threading.Thread, dict]:
    """A waiting rank 1, in a thread; the outcome dict gets its bank or its error."""
    outcome: dict = {}

    def wait() -> None:
        try:
            outcome["bank"] = cached_bank(cache, {"k": 1}, lambda work: None, rank=1, wait=True, poll_seconds=0.05,
                                          **kwargs)
        except DataError as e:
            outcome["error"] = e

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, outcome


def test_case8_a_waiting_rank_stops_when_rank_0_dies(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen([sys.executable, "-c", RANK0, str(tmp_path)], env=env) as rank0:
        try:
            deadline = time.monotonic() + 60
            while not list(tmp_path.glob("banks/*.alive-*")) and time.monotonic() < deadline:
                time.sleep(0.05)
            (heartbeat,) = tmp_path.glob("banks/*.alive-*")
            assert json.loads(heartbeat.read_text())["pid"] == rank0.pid
            thread, outcome = _wait_in_thread(tmp_path, timeout_s=20)  # the old code: 20 s, then "does every node"
            time.sleep(0.3)
            assert thread.is_alive()  # rank 0 lives: rank 1 waits
        finally:
            rank0.kill()
    thread.join(30)
    assert f"rank 0 (pid {rank0.pid}) has ended before it published" in str(outcome["error"])


def _heartbeat(cache: Path, host: str, pid: int) -> Path:
    """Rank 0's heartbeat file as `cached_bank` names it, for this test's job ("local")."""
    from rim_bench.core.config import config_hash

    heartbeat = cache / "banks" / f"{config_hash({'k': 1})}.alive-local"
    heartbeat.parent.mkdir()
    heartbeat.write_text(json.dumps({"host": host, "pid": pid}))
    return heartbeat


def test_case8_a_silent_heartbeat_of_another_host_is_stale(tmp_path: Path):
    _heartbeat(tmp_path, "another-node", 1)
    thread, outcome = _wait_in_thread(tmp_path, timeout_s=20, stale_s=0.5)
    thread.join(30)
    assert "rank 0 has given no sign of life for" in str(outcome["error"])


def test_case8_a_waiting_rank_stops_when_rank_0_stops_without_a_bank(tmp_path: Path):
    """Rank 0 interrupted (SIGTERM now stops it) removes its heartbeat and writes no bank."""
    import socket

    heartbeat = _heartbeat(tmp_path, socket.gethostname(), os.getpid())  # alive, on this host
    thread, outcome = _wait_in_thread(tmp_path, timeout_s=20)
    time.sleep(0.3)
    assert thread.is_alive()
    heartbeat.unlink()
    thread.join(30)
    assert "rank 0 has stopped (its heartbeat is gone) before it published" in str(outcome["error"])


def test_case9_random_sweep_draws_from_a_huge_grid_without_listing_it(monkeypatch):
    monkeypatch.setattr(itertools, "product", lambda *a: pytest.fail("the grid was listed"))
    for parameters in ({f"k{i}": list(range(60)) for i in range(5)},  # 7.8e8 points
                       {f"k{i}": list(range(1000)) for i in range(4)},  # 1e12
                       {f"k{i}": list(range(10)) for i in range(20)}):  # 1e20: past len(range)
        spec = SweepSpec("s", "random", parameters, num_samples=5, seed=1)
        points = expand(spec)
        assert points == expand(spec) and len({tuple(p.values()) for p in points}) == 5
        assert all(list(p) == list(parameters) and all(p[k] in parameters[k] for k in p) for p in points)


def test_random_sweep_over_a_small_grid_still_takes_distinct_points_of_it():
    """What case 9's sampling keeps: points of the grid, none twice, all of them if asked for more."""
    parameters = {"a": [1, 2, 3], "b": ["x", "y"]}
    grid = [{"a": a, "b": b} for a in parameters["a"] for b in parameters["b"]]
    points = expand(SweepSpec("s", "random", parameters, num_samples=4, seed=0))
    assert len(points) == 4 and all(p in grid for p in points) and len({tuple(p.values()) for p in points}) == 4
    everything = expand(SweepSpec("s", "random", parameters, num_samples=50, seed=0))
    assert sorted(everything, key=lambda p: (p["a"], p["b"])) == grid
