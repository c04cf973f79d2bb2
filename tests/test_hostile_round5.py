"""Issue 28: nothing silently wrong, nothing of the user's overwritten, one line for every
remaining traceback. Each test names the issue's case it covers.

1: a cache entry proves what it is for (swapped entries are recomputed, not used);
3-5: output folders hold rim-bench's files only; 6: sweeps count before they build;
7-12: one line each.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from helpers import error_of

from rim_bench.commands.cli import main
from rim_bench.core.errors import ConfigError
from rim_bench.run.region_cache import RegionCache

DAMAGED = "damaged cache entry"
SMOKE_MIOU = 62.6435  # `rim-bench test experiment=smoke` (README, tests/test_smoke.py)


def _damaged(caught) -> list[str]:
    return [str(w.message) for w in caught if DAMAGED in str(w.message)]


# ------------------------------------------------- 1. a cache entry proves what it is for


def _smoke(cache: Path, smoke_root: Path, out: Path) -> tuple[float, list[str]]:
    """`rim-bench test experiment=smoke` on `cache`: its mIoU and the damaged-cache warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["test", "experiment=smoke", f"data.root={smoke_root}", f"cache_dir={cache}",
                     f"output_dir={out}"]) == 0
    return json.loads((out / "metrics.json").read_text())["mIoU"], _damaged(caught)


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name("swap.tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def _segment(images: list[Path], out: Path, cache: Path) -> tuple[list[bytes], list[str]]:
    """`rim-bench segment` of `images` into `out`: the label maps' bytes and the damaged-cache warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["segment", *map(str, images), "--classes", "background,sun,leaf,sea,berry,grape",
                     "experiment=smoke", f"cache_dir={cache}", "--out", str(out)]) == 0
    return [(out / f"{image.stem}.png").read_bytes() for image in images], _damaged(caught)


def test_case1_swapped_region_entries_of_two_same_size_images_are_recomputed(smoke_root: Path, tmp_path: Path):
    from PIL import Image

    first = sorted((smoke_root / "JPEGImages").glob("*.jpg"))[0]
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    with Image.open(first) as image:
        image.save(images[0])
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(images[1])  # the same size, other regions
    cache = tmp_path / "cache"
    labels, damaged = _segment(images, tmp_path / "first", cache)
    assert labels[0] != labels[1] and not damaged
    _swap(*sorted((cache / "regions").rglob("*.safetensors")))  # both intact, each in the other's place
    again, damaged = _segment(images, tmp_path / "second", cache)  # before: each image got the other's regions
    assert again == labels
    assert len(damaged) == 2 and all("was made for another entry" in m for m in damaged), damaged
    assert _segment(images, tmp_path / "third", cache) == (labels, [])  # recomputed and stored again


def test_case1_a_region_entry_copied_under_another_image_or_settings_key_is_set_aside(tmp_path: Path):
    cat, dog = RegionCache(tmp_path / "regions" / "key1"), RegionCache(tmp_path / "regions" / "key2")
    cat.put("sha256-cat", torch.zeros(3, 3, dtype=torch.long), torch.ones(1, 4))
    cat.put("sha256-dog", torch.zeros(3, 3, dtype=torch.long), torch.full((1, 4), 2.0))
    shutil.copy(cat._path("sha256-cat"), cat._path("sha256-dog"))
    with pytest.warns(UserWarning, match=r"sha256-dog.safetensors' was made for another entry \(regions key1, "
                                         r"image sha256-cat, not regions key1, image sha256-dog\)"):
        assert cat.get("sha256-dog") is None
    dog.directory.mkdir(parents=True)
    shutil.copy(cat._path("sha256-cat"), dog._path("sha256-cat"))  # another settings key
    with pytest.warns(UserWarning, match="was made for another entry"):
        assert dog.get("sha256-cat") is None
    assert cat.get("sha256-cat")[1].tolist() == [[1.0] * 4]  # the original is read as before


def test_case1_swapped_text_caches_shards_and_banks_are_set_aside(tmp_path: Path):
    from rim_bench.core.types import ReferenceBank
    from rim_bench.stages.backbones.openai_clip import Architecture, BpeTokenizer, OpenAIClip, random_state_dict
    from rim_bench.stages.pixel import text
    from rim_bench.stages.references.bank import cached_bank, save_shard, shard_or_none

    tokenizer = BpeTokenizer(None)  # a token per byte: no BPE file
    arch = Architecture(width=64, layers=1, patch=16, grid=2, embed_dim=8, context=77, vocab=len(tokenizer),
                        text_width=64, text_layers=1)
    model = OpenAIClip(arch)
    model.load_state_dict(random_state_dict(arch, seed=1))

    def Model() -> OpenAIClip:  # noqa: N802 - the same text tower each time
        return model

    cats = text.cached_text_embeddings(Model(), tokenizer, ["cat"], ["a {}."], "m", tmp_path / "text")
    text.cached_text_embeddings(Model(), tokenizer, ["horse"], ["a {}."], "m", tmp_path / "text")
    _swap(*sorted((tmp_path / "text").glob("text-*.safetensors")))
    with pytest.warns(UserWarning, match="was made for another entry"):
        again = text.cached_text_embeddings(Model(), tokenizer, ["cat"], ["a {}."], "m", tmp_path / "text")
    assert torch.equal(again, cats)

    store = tmp_path / "references" / "0123456789ab"
    first, second = store / "cat" / "aaaa.safetensors", store / "cat" / "bbbb.safetensors"
    save_shard(first, {"features": torch.ones(2, 4)}, {"meta": [], "dropped": 0})
    save_shard(second, {"features": torch.zeros(2, 4)}, {"meta": [], "dropped": 0})
    _swap(first, second)
    with pytest.warns(UserWarning, match="was made for another entry"):
        assert shard_or_none(first) is None

    def build(features: torch.Tensor):
        return lambda work: ReferenceBank(features, torch.tensor([0, 1]), torch.tensor([0, 1]), ["cat", "dog"],
                                          ["cat/x", "dog/y"], [{}, {}])

    _, cat_bank, _ = cached_bank(tmp_path, {"classes": ["cat", "dog"]}, build(torch.eye(2)))
    _, dog_bank, _ = cached_bank(tmp_path, {"classes": ["dog", "cat"]}, build(-torch.eye(2)))
    shutil.rmtree(dog_bank)
    shutil.copytree(cat_bank, dog_bank)  # a bank folder under another spec's key
    with pytest.warns(UserWarning, match=f"{DAMAGED} '{dog_bank}'.*was made for another entry"):
        bank, _, hit = cached_bank(tmp_path, {"classes": ["dog", "cat"]}, build(-torch.eye(2)))
    assert not hit and torch.equal(bank.features, -torch.eye(2))


# ---------------------------------------------------------------- 7. a full cache disk


def test_case7_a_full_cache_disk_is_one_line(tmp_path: Path, monkeypatch):
    from safetensors import SafetensorError

    from rim_bench.core import cache_files

    def full_disk(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr(cache_files, "save_file", full_disk)
    cache = RegionCache(tmp_path / "regions" / "key")
    with pytest.raises(ConfigError, match=r"cache_dir: cannot write the region cache .*key' \(No space left on "
                                          r"device\): make it writable, or set cache_regions=false"):
        cache.put("img", torch.zeros(4, 4, dtype=torch.long), torch.zeros(1, 8))
    assert not list((tmp_path / "regions" / "key").iterdir())  # no temporary file left


def test_case7_a_full_disk_under_any_cache_file_is_one_line(tmp_path: Path, monkeypatch, capsys):
    _fail_during_the_test(monkeypatch, "full disk")  # the bank is the first cache written: it had no handler
    assert main(["test", "experiment=smoke", "data.max_images=2", f"cache_dir={tmp_path / 'cache'}",
                 f"output_dir={tmp_path / 'out'}"]) == 2
    error = error_of(capsys)
    assert "bank.safetensors' (No space left on device): free space there, or set cache_dir" in error


# ------------------------------------------------------- 8. rim-bench-lightning's arguments


@pytest.mark.parametrize("args, fragment", [
    (["--config", "nosuchname"], "--config nosuchname: no such file, experiment"),
    (["--config", "/nonexistent.yaml"], "--config /nonexistent.yaml: no such file"),
    (["--config", "smoke", "--trainer.devices", "abc"], "trainer: `devices` selected with `CPUAccelerator` should be"),
])
def test_case8_lightning_config_and_trainer_mistakes_are_one_line(args: list[str], fragment: str, capsys,
                                                                   tmp_path: Path, monkeypatch):
    from rim_bench.commands import lightning

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["rim-bench-lightning", "test", *args])  # as from the command line
    with pytest.raises(SystemExit) as stopped:
        lightning.main()
    assert stopped.value.code == 2
    assert fragment in error_of(capsys, "rim-bench-lightning")
    assert not list(tmp_path.iterdir())  # and no run folder left behind


# ------------------------------------------------------------- 9. lock files, every field


@pytest.mark.parametrize("fields, fragment", [
    ({"pid": "abc"}, "pid 'abc' is not a process id"),
    ({"pid": 2**40}, f"pid {2**40} is not a process id"),
    ({"pid": -1}, "pid -1 is not a process id"),
    ({"started": "noon"}, "started 'noon' is not a process start time"),
    ({"host": ["a"]}, "host ['a'] is not a host name"),
])
def test_case9_a_lock_with_a_bad_field_is_one_line_and_never_taken_over(fields: dict, fragment: str,
                                                                         tmp_path: Path):
    import os
    import socket

    from rim_bench.core.output_lock import LOCK_FILE, hold_output

    lock = tmp_path / "out" / LOCK_FILE
    lock.parent.mkdir()
    # A live pid (this test's parent) on this host: only a bad field could have made the lock look stale.
    text = json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "started": 1, "command": "x", "since": "",
                       **fields})
    lock.write_text(text)
    with pytest.raises(ConfigError, match=rf"output_dir '{lock.parent}': its lock file {lock} cannot be read "
                                          rf"\({re.escape(fragment)}: .*if no rim-bench run writes there, delete it"):
        with hold_output(lock.parent):
            pass
    assert lock.read_text() == text


def test_case9_segment_into_a_folder_whose_lock_has_a_text_pid_is_one_line(smoke_root: Path, tmp_path: Path,
                                                                          capsys):
    from rim_bench.core.output_lock import LOCK_FILE

    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"host": "h", "pid": "abc", "started": None}))
    image = sorted((smoke_root / "JPEGImages").glob("*.jpg"))[0]
    assert main(["segment", str(image), "--classes", "sun,leaf", "experiment=smoke", "--out", str(out)]) == 2
    assert "pid 'abc' is not a process id" in error_of(capsys)  # a TypeError from os.kill before


# --------------------------------------------------------- 11. a closed pipe on stdout


def test_case11_config_into_a_closed_pipe_ends_without_a_traceback():
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # `| head -1` once it has its line: every write fails
    try:
        done = subprocess.run([sys.executable, "-m", "rim_bench.commands.cli", "config", "experiment=smoke"],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141  # as a shell reports a command that SIGPIPE ended


# ------------------------------------------------------------------ 12. smaller ones


def test_case12_an_unclosed_bracket_in_a_swept_value_is_named(capsys):
    assert main(["sweep", "experiment=smoke", "matcher.rim.temperature=[0.05,0.1"]) == 2
    assert "'[0.05,0.1' opens a bracket it does not close" in error_of(capsys)  # "give sweep=NAME" before


def test_case12_warnings_are_one_line_without_source_file_paths(tmp_path: Path):
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{truncated")
    (run / "config.yaml").write_text("data: {}\n")
    done = subprocess.run([sys.executable, "-m", "rim_bench.commands.cli", "report", str(run), "--out",
                           str(tmp_path / "report")], capture_output=True, text=True, timeout=120)
    warning = [line for line in done.stderr.splitlines() if "skipping" in line]
    assert warning == [f"UserWarning: report: skipping '{run}': cannot read {run / 'metrics.json'} or "
                       f"{run / 'config.yaml'} (Expecting property name enclosed in double quotes: line 1 column 2 "
                       "(char 1)): rerun it"], done.stderr  # "report.py:139: UserWarning: ..." and its code before
    assert ".py:" not in done.stderr


def test_case12_check_data_counts_every_image_of_the_set(smoke_root: Path, tmp_path: Path, capsys):
    data = tmp_path / "data"
    shutil.copytree(smoke_root, data)
    first = sorted((data / "SegmentationClass").glob("*.png"))[0]
    first.unlink()  # a problem found when the set is opened: its image was left out of the bar
    assert main(["check-data", "experiment=smoke", f"data.root={data}"]) == 2
    captured = capsys.readouterr()
    assert "24/24" in captured.err and "/23 " not in captured.err  # "0/23" for 24 images before
    assert "1 of 24 images" in captured.err


def test_case12_compare_refuses_a_method_given_twice(capsys):
    assert main(["compare", "experiment=smoke", "methods=[rim,rim]"]) == 2
    assert "methods: rim given more than once in '[rim,rim]'; list each method once" in error_of(capsys)


def test_case12_a_waiting_rank_notices_a_killed_unreaped_rank_0_at_once(tmp_path: Path):
    """A rank 0 killed but not yet reaped by its parent (a zombie) answers signal 0 as if alive:
    the waiting rank sat out the whole silence (65-70 s) before; now it stops at its next poll."""
    import socket
    import subprocess
    import sys
    import threading
    import time

    from rim_bench.core.config import config_hash
    from rim_bench.core.errors import DataError
    from rim_bench.stages.references.bank import HEARTBEAT_S, HEARTBEAT_STALE_S, cached_bank

    assert HEARTBEAT_STALE_S + HEARTBEAT_S + 2.0 <= 60  # a node's silence, the last beat, a poll: a minute
    rank0 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    heartbeat = tmp_path / "banks" / f"{config_hash({'k': 1})}.alive-local"
    heartbeat.parent.mkdir()
    heartbeat.write_text(json.dumps({"host": socket.gethostname(), "pid": rank0.pid}))
    outcome: dict = {}

    def wait() -> None:
        try:
            cached_bank(tmp_path, {"k": 1}, lambda work: None, rank=1, wait=True, poll_seconds=0.05, timeout_s=20)
        except DataError as e:
            outcome["error"] = str(e)

    thread = threading.Thread(target=wait, daemon=True)
    try:
        thread.start()
        time.sleep(0.3)
        assert thread.is_alive()
        rank0.kill()  # not waited for: a zombie until `wait` below
        start = time.monotonic()
        thread.join(15)
        assert f"rank 0 (pid {rank0.pid}) has ended before it published" in outcome.get("error", "")
        assert time.monotonic() - start < 5
    finally:
        rank0.kill()
        rank0.wait()


def test_case12_set_vocabulary_none_is_one_clear_error():
    from rim_bench.commands.api import RIM

    rim = RIM.from_config("smoke")
    with pytest.raises(ConfigError, match=r"the vocabulary is a NoneType: give a list of class names, "
                                          r"e.g. \['cat', 'dog'\]"):
        rim.set_vocabulary(None)  # type: ignore[arg-type]


# ------------------------------------------------------- 10. hand-edited results in a report


def _edit_metrics(folder: Path, **changes) -> Path:
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**metrics, **changes}))  # NaN as JSON's NaN
    return folder


def test_case10_report_skips_hand_edited_values_with_one_line_each(tmp_path: Path, capsys):
    from helpers import run_folder

    good = _edit_metrics(run_folder(tmp_path / "good"), peak_memory_mb=[1, 2], seconds={"total": "fast"},
                         throughput=3)  # the cost cells of a hand-edited file are left out, not a traceback
    damaged = {
        _edit_metrics(run_folder(tmp_path / "string_iou"), per_class_iou={"sky": "high", "leaf": 3.0}):
            "the IoU of class 'sky' is 'high', not a score",
        _edit_metrics(run_folder(tmp_path / "nan"), mIoU=float("nan")): "mIoU is nan, not a score",
        run_folder(tmp_path / "no_data_name"): "data.name is None, not a name",
    }
    (tmp_path / "no_data_name" / "config.yaml").write_text("data: {root: x}\nmatcher: {name: rim}\n")
    with pytest.warns(UserWarning) as caught:
        assert main(["report", *map(str, damaged), str(good), "--out", str(tmp_path / "report")]) == 0
    messages = [str(w.message) for w in caught]
    for folder, fragment in damaged.items():
        assert any(f"skipping '{folder}'" in m and fragment in m for m in messages), (fragment, messages)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| good | smoke | smoke | rim | 50.00 | 60.00 | 70.00 | 2 | - | - | - | - |" in text
    assert "nan" not in text.lower()
    with pytest.warns(UserWarning):  # a NaN mIoU alone: nothing to report, exit 2 (printed as "nan", exit 0 before)
        assert main(["report", str(tmp_path / "nan"), "--out", str(tmp_path / "report2")]) == 2
    assert "nothing to report" in error_of(capsys)


# ------------------------------------------------------------ 6. sweeps count first


def test_case6_a_huge_grid_is_one_line_before_any_point_is_made(tmp_path: Path, capsys, monkeypatch):
    import itertools

    monkeypatch.setattr(itertools, "product", lambda *a: pytest.fail("the grid was listed"))
    values = ",".join(str(v / 1000) for v in range(1, 101))
    keys = ["matcher.rim.temperature", "matcher.rim.ref_temperature", "seed", "proposer.slic.n_segments",
            "proposer.slic.compactness", "data.max_images", "pooling.mask.min_area"]
    assert main(["sweep", "experiment=smoke", *(f"{key}={values}" for key in keys)]) == 2  # MemoryError before
    error = error_of(capsys)
    assert "the sweep has 100,000,000,000,000 points (100 matcher.rim.temperature x 100" in error
    assert "over the 1,000 one sweep runs" in error and "method: random and num_samples" in error
    sweep_file = tmp_path / "big.yaml"
    sweep_file.write_text("parameters:\n" + "".join(f"  {key}: [{values}]\n" for key in keys))
    assert main(["sweep", "experiment=smoke", f"sweep={sweep_file}"]) == 2
    assert f"{sweep_file}: the sweep has 100,000,000,000,000 points" in error_of(capsys)


def test_case6_points_are_made_one_at_a_time_and_a_random_sweep_of_a_huge_grid_is_fine():
    from rim_bench.commands.sweep import SweepSpec, count_points, points

    grid = SweepSpec("s", "grid", {"a": [1, 2], "b": ["x", "y", "z"]})
    made = points(grid)
    assert count_points(grid) == 6 and next(made) == {"a": 1, "b": "x"}  # an iterator, not a list
    huge = SweepSpec("s", "random", {f"k{i}": list(range(100)) for i in range(8)}, num_samples=5)
    assert count_points(huge) == 5 and len(list(points(huge))) == 5
    with pytest.raises(ConfigError, match="the sweep has 2,000 points .* give a smaller num_samples"):
        points(SweepSpec("s", "random", {f"k{i}": list(range(100)) for i in range(8)}, num_samples=2000))


# ----------------------------------------- 3-5. output folders hold rim-bench's files only

CLASSES = "background,sun,leaf,sea,berry,grape"


@pytest.fixture
def photo(smoke_root: Path, tmp_path: Path) -> Path:
    """A user's photo, outside any output folder."""
    image = tmp_path / "photos" / "photo.jpg"
    image.parent.mkdir()
    shutil.copy(sorted((smoke_root / "JPEGImages").glob("*.jpg"))[0], image)
    return image


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_case3_segment_refuses_a_folder_holding_another_vocabularys_label_maps(photo: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(photo), "--classes", CLASSES, "experiment=smoke", "--out", str(out)]) == 0
    first = _files(out)
    assert main(["segment", str(photo), "--classes", "background,grape,sun", "experiment=smoke",
                 "--out", str(out)]) == 2  # exit 0 before, classes.txt then naming the second vocabulary
    assert "holds the label maps of another vocabulary (['background', 'sun', 'leaf'" in error_of(capsys)
    assert _files(out) == first
    assert main(["segment", str(photo), "--classes", CLASSES, "experiment=smoke", "--out", str(out)]) == 0  # same one


def test_case4_a_plain_trainer_writes_into_a_run_folder_of_its_own(tmp_path: Path, monkeypatch):
    import lightning as L

    from rim_bench.run.datamodule import BenchmarkDataModule
    from rim_bench.run.lit_module import RIMModule

    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("my: own\n")
    trainer = L.Trainer(logger=False, enable_progress_bar=False)  # the README's route
    trainer.test(RIMModule.from_config("smoke"), datamodule=BenchmarkDataModule("smoke", max_images=2), verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "outputs"]  # metrics.json here before
    assert (tmp_path / "config.yaml").read_text() == "my: own\n"
    (run,) = (tmp_path / "outputs").iterdir()
    assert run.name.startswith("smoke-") and (run / "metrics.json").is_file() and (run / "config.yaml").is_file()


def test_case4_test_and_segment_never_replace_a_users_files(photo: Path, tmp_path: Path, capsys):
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "config.yaml").write_text("mine\n")
    (user / "classes.txt").write_text("mine too\n")
    assert main(["segment", str(photo), "--classes", CLASSES, "experiment=smoke", "--out", str(user)]) == 2
    error = error_of(capsys)
    assert f"--out '{user}' holds files rim-bench did not write (classes.txt, config.yaml)" in error
    assert main(["test", "experiment=smoke", f"output_dir={user}"]) == 2
    assert "output_dir '" + str(user) + "' holds files rim-bench did not write" in error_of(capsys)
    assert _files(user) == {"classes.txt": b"mine too\n", "config.yaml": b"mine\n"}
    segmented = tmp_path / "segmented"
    assert main(["segment", str(photo), "--classes", CLASSES, "experiment=smoke", "--out", str(segmented)]) == 0
    assert main(["test", "experiment=smoke", f"output_dir={segmented}"]) == 2  # another command's folder
    assert "holds the output of `rim-bench segment`; choose another output_dir for `rim-bench test`" in error_of(capsys)


def test_case4_report_never_replaces_a_users_picture(tmp_path: Path, capsys):
    from helpers import run_folder

    run = run_folder(tmp_path / "run")
    (run / "overlays").mkdir()
    Image = pytest.importorskip("PIL.Image")
    Image.new("RGB", (4, 4)).save(run / "overlays" / "a.png")
    out = tmp_path / "report"
    picture = out / "images" / "00-run" / "a.png"
    picture.parent.mkdir(parents=True)
    picture.write_bytes(b"my picture")
    assert main(["report", str(run), "--out", str(out)]) == 2
    assert "holds files rim-bench did not write (images)" in error_of(capsys)
    assert picture.read_bytes() == b"my picture" and sorted(p.name for p in out.iterdir()) == ["images"]
    shutil.rmtree(out / "images")
    for _ in range(2):  # its own folder it rewrites
        assert main(["report", str(run), "--out", str(out)]) == 0


def _fail_during_the_test(monkeypatch, failure: str) -> None:
    """Make `rim-bench test` fail once it runs, as a bad peer weight file, a full cache disk or SIGTERM do."""
    import os
    import signal

    from safetensors import SafetensorError

    from rim_bench.core import cache_files
    from rim_bench.core.errors import DataError
    from rim_bench.run.assembly import Assembly

    def bad_weights(*args, **kwargs):
        raise DataError("weights file 'clip.pt' cannot be read: truncated")

    def full_disk(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    def sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    if failure == "weights":
        monkeypatch.setattr(Assembly, "pipeline", bad_weights)
    elif failure == "full disk":
        monkeypatch.setattr(cache_files, "save_file", full_disk)
    else:
        from rim_bench.run.lit_module import RIMModule

        monkeypatch.setattr(RIMModule, "test_step", sigterm)


@pytest.mark.parametrize("failure, code", [("weights", 2), ("full disk", 2), ("sigterm", 143)])
def test_case5_a_failed_run_removes_the_folder_it_created(failure: str, code: int, tmp_path: Path, monkeypatch,
                                                          capsys):
    _fail_during_the_test(monkeypatch, failure)
    out = tmp_path / "out"
    assert main(["test", "experiment=smoke", "data.max_images=2", f"cache_dir={tmp_path / 'cache'}",
                 f"output_dir={out}"]) == code
    assert not out.exists()  # an empty folder (or one with csv/) was left before
    existing = tmp_path / "existing"
    existing.mkdir()
    assert main(["test", "experiment=smoke", "data.max_images=2", f"cache_dir={tmp_path / 'cache'}",
                 f"output_dir={existing}"]) == code
    assert existing.is_dir() and not list(existing.iterdir())  # a folder that was there stays, as it was


def test_case5_a_plain_trainer_that_fails_removes_its_run_folder(tmp_path: Path, monkeypatch):
    import lightning as L

    from rim_bench.core.errors import DataError
    from rim_bench.run.datamodule import BenchmarkDataModule
    from rim_bench.run.lit_module import RIMModule

    def bad_weights(*args, **kwargs):
        raise DataError("weights file cannot be read")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(RIMModule, "test_step", bad_weights)
    with pytest.raises(DataError):
        L.Trainer(logger=False, enable_progress_bar=False).test(
            RIMModule.from_config("smoke"), datamodule=BenchmarkDataModule("smoke", max_images=2), verbose=False)
    assert not list((tmp_path / "outputs").iterdir())


def test_case10_a_sweep_point_whose_miou_was_edited_to_nan_is_run_again(tmp_path: Path, monkeypatch):
    from helpers import fake_finished_runs

    from rim_bench.commands.sweep import load_sweep, run_sweep

    runs, sweep_file = fake_finished_runs(monkeypatch, tmp_path)
    run_sweep(["experiment=smoke"], load_sweep(str(sweep_file)))
    point = Path(runs[1])
    _edit_metrics(point, mIoU=float("nan"))
    with pytest.warns(UserWarning, match="damaged cache entry .*metrics.json.*mIoU nan"):
        rows = run_sweep(["experiment=smoke"], load_sweep(str(sweep_file)))  # reused as "nan" before
    assert runs[2:] == [str(point)] and [row["mIoU"] for row in rows] == [1.0, 1.0]
