"""Issue 20: outputs. A file given as input is never an output, one run writes a folder at a time,
and nothing a user wrote is overwritten (cases 1, 2 and 6 of the issue)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import warnings
from contextlib import ExitStack
from pathlib import Path

import pytest
from helpers import error_of
from PIL import Image

from rim_bench.commands.api import RIM
from rim_bench.commands.cli import main
from rim_bench.core.config import load_config, resolve
from rim_bench.core.errors import ConfigError
from rim_bench.core.output_lock import LOCK_FILE, Holder, _process_state, hold_output
from rim_bench.run import runner

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def photos(smoke_root: Path, tmp_path: Path) -> Path:
    """A user's folder of two PNG photos (the names `segment` would give its label maps)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for image in sorted((smoke_root / "JPEGImages").glob("*.jpg"))[:2]:
        Image.open(image).save(folder / f"{image.stem}.png")
    return folder


@pytest.fixture
def no_rim(monkeypatch, no_models):
    """Fail the test if `segment` builds its model."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the input was checked")
    monkeypatch.setattr(RIM, "__init__", refuse)


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------- 1. inputs are never outputs


@pytest.mark.parametrize("where", ["the image folder", "dot inside it", "a sub-folder holding an input", "a link"])
def test_case1_segment_refuses_an_output_folder_holding_its_images(where: str, photos: Path, tmp_path: Path,
                                                                   monkeypatch, capsys, no_rim):
    inputs, out = [str(photos)], str(photos)
    if where == "dot inside it":
        monkeypatch.chdir(photos)
        inputs, out = ["."], "."
    elif where == "a sub-folder holding an input":
        (photos / "sub").mkdir()
        first = sorted(photos.glob("*.png"))[0]
        first.rename(photos / "sub" / first.name)
        inputs, out = [str(photos / "sub" / first.name), *map(str, photos.glob("*.png"))], str(photos / "sub")
    elif where == "a link":
        (tmp_path / "link").symlink_to(photos)
        out = str(tmp_path / "link")
    before = _contents(photos)
    assert main(["segment", *inputs, "--classes", "sun,leaf", "experiment=smoke", "--out", out]) == 2
    error = error_of(capsys)
    assert f"--out '{out}' holds the input '" in error and "choose an output folder that holds none of them" in error
    assert _contents(photos) == before  # nothing replaced, nothing added


def test_segment_into_a_folder_beside_its_images_is_fine(photos: Path, capsys):
    # Not over-refused (case 1): a folder inside the image folder, holding none of the images.
    out = photos / "segmented"
    assert main(["segment", str(photos), "--classes", "sun,leaf", "experiment=smoke", "--out", str(out)]) == 0
    assert len(list(out.glob("*_overlay.png"))) == 2 and not (out / LOCK_FILE).exists()


# ------------------------------------------------------------- 2. one writer per output folder


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that holds `folder` until it is killed (a run writing there); as rank 0,
    told so to spare it the import of Lightning that finding its rank takes."""
    code = ("import sys, time\nfrom rim_bench.core import output_lock\noutput_lock._further_rank = lambda: False\n"
            "with output_lock.hold_output(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(300)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def held(tmp_path: Path):
    """A folder that another running process holds."""
    folder = tmp_path / "out"
    proc = _holder(folder)
    yield folder, proc
    proc.kill()
    proc.wait()


def test_case2_a_second_run_on_a_held_folder_is_refused_then_takes_over_when_the_holder_dies(
        held, capsys, no_models, monkeypatch):
    folder, proc = held
    # The first run (rim) holds the folder; a second, another config, starts on it.
    args = ["test", "experiment=smoke", "data.max_images=1", f"output_dir={folder}", "matcher.name=cosine"]
    assert main(args) == 2
    error = error_of(capsys)
    assert f"output_dir '{folder}' is being written by another run: pid {proc.pid} on {socket.gethostname()}" in error
    assert "since " in error and "wait for it to end or choose another output_dir" in error
    assert not (folder / "metrics.json").exists()
    proc.kill()  # killed -9: its lock stays, naming a process that is gone
    proc.wait()
    assert (folder / LOCK_FILE).exists()
    monkeypatch.undo()  # the models may load now
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args) == 0
    assert any("taking over the lock of a run that is gone" in str(w.message) for w in caught)
    assert json.loads((folder / "metrics.json").read_text())["mIoU"] is not None
    assert not (folder / LOCK_FILE).exists()  # released at the end


@pytest.mark.parametrize("command", [
    ["sweep", "experiment=smoke", "sweep=background"],
    ["compare", "experiment=smoke", "methods=[rim,cosine]"],
    ["suite", "smoke"],
])
def test_case2_sweep_compare_and_suite_refuse_a_held_folder(command: list[str], held, capsys, monkeypatch):
    folder, proc = held

    def no_run(cfg, label=None):
        raise AssertionError("a run started in a held folder")

    monkeypatch.setattr(runner, "run_test", no_run)
    assert main([*command, f"output_dir={folder}"]) == 2
    assert f"is being written by another run: pid {proc.pid}" in error_of(capsys)
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]  # nothing written


def test_case2_ddp_ranks_of_the_run_share_its_lock(held, monkeypatch):
    folder, _ = held
    cfg = resolve(load_config(["experiment=smoke"]))
    with pytest.raises(ConfigError, match="is being written by another run"):
        runner.output_folder(cfg, inherited=str(folder), held=ExitStack())
    # Lightning re-runs the command for rank 1 with LOCAL_RANK and the folder rank 0 chose (and holds);
    # torchrun and srun start every rank with its RANK.
    for env in ({"LOCAL_RANK": "1"}, {"RANK": "1", "WORLD_SIZE": "2"}, {"SLURM_PROCID": "3", "SLURM_NTASKS": "4"}):
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            with ExitStack() as stack:
                assert runner.output_folder(cfg, inherited=str(folder), held=stack) == folder
    assert (folder / LOCK_FILE).exists()  # still rank 0's


def _write_lock(folder: Path, holder: Holder) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    lock.write_text(json.dumps(holder.__dict__))
    return lock


def test_case2_only_a_provably_gone_holder_is_taken_over(tmp_path: Path):
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = _process_state(os.getpid())
    assert me is not None
    gone = {"dead pid": Holder(host, dead.pid, None, "rim-bench test"),
            "pid reused": Holder(host, os.getpid(), me[1] + 1, "rim-bench test")}  # this pid, another start
    for name, holder in gone.items():
        _write_lock(tmp_path / name, holder)
        with pytest.warns(UserWarning, match="taking over the lock of a run that is gone"):
            with hold_output(tmp_path / name):
                mine = json.loads((tmp_path / name / LOCK_FILE).read_text())
        assert mine["pid"] == os.getpid() and mine["started"] == me[1], name
        assert not (tmp_path / name / LOCK_FILE).exists(), name
    # Running, or on another host (whether it runs cannot be told from here): refused, and the lock kept.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        state = _process_state(sleeper.pid)
        for name, holder in {"alive": Holder(host, sleeper.pid, state[1] if state else None, "rim-bench sweep"),
                             "elsewhere": Holder("another-host", dead.pid, None, "rim-bench suite")}.items():
            lock = _write_lock(tmp_path / name, holder)
            with pytest.raises(ConfigError, match=f"pid {holder.pid} on {holder.host} .*{holder.command}"):
                with hold_output(tmp_path / name):
                    pass
            assert json.loads(lock.read_text())["pid"] == holder.pid
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("left", ["nothing", "a killed run's lock"])
def test_case2_of_runs_started_together_exactly_one_writes(left: str, tmp_path: Path):
    folder, go = tmp_path / "out", tmp_path / "go"
    if left != "nothing":
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        _write_lock(folder, Holder(socket.gethostname(), dead.pid, None, "rim-bench test"))
    code = ("import os, sys, time, warnings\nfrom rim_bench.core import output_lock\n"
            "from rim_bench.core.errors import ConfigError\noutput_lock._further_rank = lambda: False\n"
            "warnings.simplefilter('ignore')\n"
            "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
            "try:\n    with output_lock.hold_output(sys.argv[1]):\n        print('held', flush=True)\n"
            "        time.sleep(3)\nexcept ConfigError:\n    print('refused', flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(folder), str(go)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(4)]
    go.touch()  # all at once
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outcomes == ["held", "refused", "refused", "refused"]
    assert not (folder / LOCK_FILE).exists()  # released by the one that held it


def test_case2_the_lock_is_released_on_errors_and_interrupts_and_reentrant(tmp_path: Path):
    lock = tmp_path / "out" / LOCK_FILE
    for error in (KeyboardInterrupt, RuntimeError):
        with pytest.raises(error):
            with hold_output(tmp_path / "out"):
                assert lock.exists()
                raise error
        assert not lock.exists()
    with hold_output(tmp_path / "out"):
        with hold_output(tmp_path / "out"):  # the same process again (a nested run): no deadlock
            pass
        assert lock.exists()  # still held by the outer hold
    assert not lock.exists()


def test_case2_a_killed_run_leaves_a_lock_the_next_run_takes_over(tmp_path: Path):
    # A real SIGKILL, as kill -9: no cleanup runs, and the lock names a process that is gone.
    proc = _holder(tmp_path / "out")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.warns(UserWarning, match=f"pid {proc.pid}"):
        with hold_output(tmp_path / "out"):
            pass


# ------------------------------------------------------------- 6. names that collide


def test_case6_segment_refuses_class_names_with_line_breaks(photos: Path, tmp_path: Path, capsys, no_rim):
    out = tmp_path / "out"
    assert main(["segment", str(photos), "--classes", "a\nb,c\rd", "experiment=smoke", "--out", str(out)]) == 2
    error = error_of(capsys)
    assert "--classes: the class name 'a\\nb' holds a line break or control character" in error
    assert not out.exists()  # no classes.txt whose line numbers differ from class ids


def test_case6_two_keys_ending_in_one_name_get_two_plots(tmp_path: Path):
    from rim_bench.commands.sweep import plot_sweep

    keys = ["matcher.rim.temperature", "segmenter.paint.background.probability.temperature"]
    rows = [{keys[0]: a, keys[1]: b, "mIoU": a + b} for a in (0.1, 0.2) for b in (1.0, 2.0)]
    files = plot_sweep(rows, keys, tmp_path)
    assert len(set(files)) == 2 and all(f.is_file() for f in files)
    assert {f.name for f in files} == {f"mIoU_vs_{k}.png" for k in keys}


def _run_folder(root: Path) -> Path:
    run = root / "run"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"mIoU": 1.0, "mAcc": 2.0, "aAcc": 3.0, "num_images": 1,
                                                  "per_class_iou": {"sun": 5.0}}))
    (run / "config.yaml").write_text("experiment: smoke\ndata: {name: smoke}\nmatcher: {name: rim}\n")
    return run


@pytest.mark.parametrize("name", ["report.md", "report.html"])
def test_case6_report_never_overwrites_a_report_it_did_not_write(name: str, tmp_path: Path, monkeypatch, capsys):
    run = _run_folder(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / name).write_text("my own notes\n")
    assert main(["report", str(run)]) == 2  # the default --out report (issue 28: a folder of rim-bench's files only)
    assert f"--out 'report' holds files rim-bench did not write ({name})" in error_of(capsys)
    assert (tmp_path / "report" / name).read_text() == "my own notes\n"
    assert not (tmp_path / "report" / "images").exists()
    (tmp_path / "report" / name).unlink()
    for _ in range(2):  # its own report it rewrites
        assert main(["report", str(run)]) == 0
    assert (tmp_path / "report" / "report.md").read_text().startswith("<!-- written by rim-bench -->\n# rim-bench")
