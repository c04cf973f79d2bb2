"""Issue 20: missing data and one-line errors (cases 3, 11 and 12).

A `data.root` that does not exist is an error (the smoke set is generated only at its default
root or when asked); every case of 11 and 12 ends in one line naming the file, the value and
the fix, or (`report`, a resumed sweep) goes on past a damaged folder with a warning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SPLIT, error_of, fake_finished_runs, label_out_of_range, run_folder, smoke_copy_args, split_ids
from PIL import Image

from rim_bench.commands.cli import main
from rim_bench.core.config import load_config, resolve
from rim_bench.core.errors import ConfigError, DataError
from rim_bench.run import runner
from rim_bench.run.datamodule import BenchmarkDataModule, build_dataset
from rim_bench.run.methods import result_spec

REPO = Path(__file__).resolve().parent.parent


def _data_config(root: Path, *overrides: str):
    """The resolved ``data`` block of `_args` (a copy of the smoke set read as a VOC-layout folder)."""
    return resolve(load_config(smoke_copy_args(root, *overrides))).data


# ------------------------------------------------------------------- 3. missing data


def test_case3_a_missing_data_root_is_an_error_and_is_not_created(tmp_path: Path, capsys, no_models):
    missing = tmp_path / "some" / "nonexistent" / "path"
    for name in ("smoke", "voc21", "ade20k", "cityscapes"):  # the smoke set was generated there
        assert main(["check-data", "experiment=smoke", f"data.name={name}", f"data.root={missing}"]) == 2, name
        assert f"data root '{missing}' does not exist" in error_of(capsys)
        assert not (tmp_path / "some").exists()


def test_case3_the_api_and_the_datamodule_refuse_a_missing_root(tmp_path: Path):
    from rim_bench.commands.api import RIM

    missing = tmp_path / "typo"
    with pytest.raises(DataError, match="does not exist"):
        BenchmarkDataModule("smoke", root=str(missing)).setup("test")
    with pytest.raises(DataError, match="does not exist"):
        RIM.from_config("smoke", **{"data.root": str(missing)})
    assert not missing.exists()


def test_case3_the_smoke_set_is_generated_at_its_default_root_or_when_asked(tmp_path: Path):
    default = resolve(load_config(["experiment=smoke", f"cache_dir={tmp_path / 'cache'}"])).data
    assert default.generate and not (tmp_path / "cache" / "smoke").exists()
    build_dataset(default)
    assert (tmp_path / "cache" / "smoke" / "DONE").is_file()
    asked = tmp_path / "elsewhere"
    build_dataset(resolve(load_config(["experiment=smoke", f"data.root={asked}", "data.generate=true"])).data)
    assert (asked / "DONE").is_file()
    module = BenchmarkDataModule("smoke", root=str(tmp_path / "module"), generate=True)
    module.setup("test")
    assert len(module.dataset) == 24
    # not a result setting: the smoke result hash does not change with it
    assert result_spec(resolve(load_config(["experiment=smoke"])))["data"].get("generate") is None


# ------------------------------------------------------------------ 11. one line each


def test_case11_a_split_id_over_255_bytes_is_one_line_and_skipped_with_skip_bad(data: Path, capsys, no_models):
    long_id = "x" * 300
    (data / SPLIT).write_text("\n".join([*split_ids(data)[:3], long_id]) + "\n")
    assert main(["test", *smoke_copy_args(data)]) == 2
    line = error_of(capsys)
    assert f"{data / SPLIT}:4: id 'xxxx" in line and "File name too long" in line
    dataset, _ = build_dataset(_data_config(data, "data.skip_bad=true"))
    assert len(dataset) == 3 and "File name too long" in dataset.problems[long_id]


def test_case11_an_image_over_pils_pixel_limit_is_one_line_and_a_skipped_problem(data: Path, capsys, no_models,
                                                                               monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 26_000)  # the smoke images (up to 144 x 176) stay under it
    big = split_ids(data)[1]
    Image.new("RGB", (300, 300)).save(data / "JPEGImages" / f"{big}.jpg")
    Image.new("L", (300, 300)).save(data / "SegmentationClass" / f"{big}.png")
    assert main(["test", *smoke_copy_args(data)]) == 2
    line = error_of(capsys)
    assert f"'{data / 'JPEGImages' / big}.jpg' is too large to read" in line and "resize it" in line
    dataset, _ = build_dataset(_data_config(data, "data.skip_bad=true"))
    assert "too large to read" in dataset.problems[big] and big not in [e.image_id for e in dataset.entries]


@pytest.mark.parametrize("damage", ["all labels 255", "every image bad with skip_bad"])
def test_case11_nothing_left_to_score_is_one_line_and_writes_no_null_miou(damage: str, data: Path, capsys):
    ids = split_ids(data)[:2]
    (data / SPLIT).write_text("\n".join(ids) + "\n")
    for image_id in ids:
        if damage == "all labels 255":
            label = data / "SegmentationClass" / f"{image_id}.png"
            with Image.open(label) as img:
                size = img.size[::-1]
            Image.fromarray(np.full(size, 255, dtype=np.uint8)).save(label)
        else:
            label_out_of_range(data, image_id)  # fails when read: a skipped sample
    out = data.parent / "out"
    assert main(["test", *smoke_copy_args(data, f"output_dir={out}", "data.skip_bad=true")]) == 2
    assert "nothing to score" in error_of(capsys)
    assert not (out / "metrics.json").exists()


def test_case11_report_skips_a_damaged_folder_with_a_warning_and_goes_on(tmp_path: Path, capsys):
    from rim_bench.commands.report import build_report

    good = run_folder(tmp_path / "good")
    truncated = run_folder(tmp_path / "truncated")
    (truncated / "metrics.json").write_text((truncated / "metrics.json").read_text()[:25])
    null = run_folder(tmp_path / "null", miou=None)
    no_config = run_folder(tmp_path / "no_config")
    (no_config / "config.yaml").unlink()
    damaged = [truncated, null, no_config]
    with pytest.warns(UserWarning) as caught:
        md, _ = build_report([*damaged, good], tmp_path / "report")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3 and all("\n" not in m for m in messages)
    for folder, fragment in zip(damaged, ["cannot read", "holds no scores", "config.yaml' not found"]):
        assert any(f"skipping '{folder}'" in m and fragment in m for m in messages), (folder, messages)
    text = md.read_text()
    assert "| good |" in text and "| truncated |" not in text and "| null |" not in text
    with pytest.warns(UserWarning):
        assert main(["report", *map(str, damaged), "--out", str(tmp_path / "none")]) == 2
    assert "nothing to report" in error_of(capsys)


def test_case11_a_resumed_sweep_recomputes_a_point_whose_metrics_are_truncated(tmp_path: Path, monkeypatch):
    from rim_bench.commands.sweep import load_sweep, run_sweep

    runs, sweep_file = fake_finished_runs(monkeypatch, tmp_path)
    run_sweep(["experiment=smoke"], load_sweep(str(sweep_file)))
    point = Path(runs[1])
    (point / "metrics.json").write_text('{"mIoU": 1.0, "mA')  # killed while written by another tool
    with pytest.warns(UserWarning, match="damaged cache entry .*metrics.json"):
        run_sweep(["experiment=smoke"], load_sweep(str(sweep_file)))
    assert runs[2:] == [str(point)]  # that point alone ran again
    assert json.loads((point / "metrics.json").read_text())["mIoU"] == 1.0


def test_case11_a_sweep_seed_that_is_not_an_integer_is_one_line(tmp_path: Path, capsys):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("method: random\nnum_samples: 1\nseed: abc\nparameters:\n  matcher.rim.alpha: [0.0, 0.5]\n")
    assert main(["sweep", "experiment=smoke", f"sweep={sweep_file}"]) == 2
    assert f"{sweep_file}: seed must be a non-negative integer, got 'abc'" in error_of(capsys)


def test_case11_a_read_only_region_cache_is_one_line(tmp_path: Path, monkeypatch):
    import torch

    from rim_bench.core import io
    from rim_bench.run.region_cache import RegionCache

    regions = tmp_path / "regions"
    regions.mkdir()
    regions.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: fail as the file system would
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    cache = RegionCache(regions / "key")
    with pytest.raises(ConfigError, match=r"cache_dir: cannot write the region cache .*regions/key' \(Permission "
                                          r"denied\): make it writable, or set cache_regions=false"):
        cache.put("img", torch.zeros(4, 4, dtype=torch.long), torch.zeros(1, 8))
    regions.chmod(0o755)


def test_case11_a_class_file_that_is_not_utf8_is_one_line(data: Path, capsys, no_models):
    classes = data.parent / "classes.txt"
    classes.write_bytes("background\nsky\nl\xe9af\n".encode("latin-1"))
    assert main(["check-data", *smoke_copy_args(data), f"data.classes={classes}"]) == 2
    assert f"{classes}:3: not UTF-8 text (byte 0xe9); save the file as UTF-8" in error_of(capsys)


def test_case11_the_api_refuses_classes_that_are_not_text_and_an_empty_image():
    from rim_bench.commands.api import RIM
    from rim_bench.data.classes import read_classes

    rim = RIM.from_config("smoke")
    for bad in ([1, 2], [["cat", 3]], [None]):
        with pytest.raises(ConfigError, match="give class names as text"):
            rim.set_vocabulary(bad)
    rim.set_vocabulary([c[0] for c in read_classes("smoke")[:2]])
    for shape in ((0, 0, 3), (0, 5, 3), (5, 0, 3)):
        with pytest.raises(DataError, match=rf"the image is empty \({shape[0]}x{shape[1]} pixels\)"):
            rim.segment(np.zeros(shape, dtype=np.uint8))


# ---------------------------------------------------------------------------- 12.


def test_case12_offline_wandb_gets_the_offline_mode_process_wide(tmp_path: Path, monkeypatch):
    """Case 12: W&B's telemetry reads the process-wide settings, not the run's `mode`."""
    import wandb

    modes = []
    monkeypatch.setattr(wandb, "setup", lambda settings=None: modes.append(settings.mode))
    cfg = resolve(load_config(["experiment=smoke", "logger=wandb"]))
    runner._loggers(cfg, tmp_path)
    assert modes == ["offline"]


@pytest.mark.slow
def test_case12_an_offline_wandb_run_makes_no_dns_query(tmp_path: Path, smoke_root: Path):
    """Case 12: a whole `logger=wandb` run in its own process (W&B's telemetry looked the server up at exit)."""
    script = (
        "import socket, sys, atexit\n"
        "calls = []\n"
        "def refuse(*a, **k):\n"
        "    calls.append(a[:2]); raise socket.gaierror('no DNS in offline mode')\n"
        "socket.getaddrinfo = refuse\n"
        "atexit.register(lambda: print('DNS queries:', calls))  # registered first: runs last\n"
        "from rim_bench.commands.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}  # the config alone says offline
    done = subprocess.run([sys.executable, "-c", script, "test", "experiment=smoke", "logger=wandb",
                           "data.max_images=1", f"data.root={smoke_root}", f"output_dir={tmp_path / 'run'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DNS queries: []" in done.stdout, done.stdout[-2000:]


def test_case12_report_md_escapes_class_and_run_names(tmp_path: Path):
    from rim_bench.commands.report import build_report

    hostile = ("a|b", "<b>bold</b>", "`code`", "[link](http://x)", "*star*_under_")
    run = run_folder(tmp_path / "run|<i>_*x*_", classes=hostile)
    md, _ = build_report([run], tmp_path / "report")
    text = md.read_text()
    for raw in ("<b>", "<i>", "[link](", "`code`", "*star*", "a|b"):
        assert raw not in text, raw
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for row in rows:  # every row keeps its cells: no name adds a column
        cells = row.replace("\\|", "").count("|")
        assert cells in (3, 13), row


def test_case12_skip_bad_keeps_the_first_of_a_duplicated_id(data: Path):
    ids = split_ids(data)[:3]
    (data / SPLIT).write_text("\n".join([*ids, ids[0]]) + "\n")
    dataset, _ = build_dataset(_data_config(data, "data.skip_bad=true"))
    assert [e.image_id for e in dataset.entries] == ids
    (problem,) = dataset.problems.values()
    assert f"id '{ids[0]}' is listed twice (first at {data / SPLIT}:1)" in problem


@pytest.mark.parametrize("command", ["config", "test"])
def test_case12_stage_names_are_checked_with_the_config_before_lightning_loads(command: str, tmp_path: Path):
    script = ("import sys\nfrom rim_bench.commands.cli import main\nrc = main(sys.argv[1:])\n"
              "print('lightning loaded:', 'lightning' in sys.modules)\nsys.exit(rc)\n")
    done = subprocess.run([sys.executable, "-c", script, command, "experiment=smoke", "matcher.name=nosuch"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("rim-bench: error: matcher.name: unknown matcher 'nosuch' "
                                   "(known: cosine, prototype, random, rim)")
    assert "lightning loaded: False" in done.stdout
    assert not (tmp_path / "outputs").exists()


def test_case12_a_run_that_fails_leaves_no_empty_output_folder(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["test", "experiment=smoke", "data.max_images=1", "proposer.name=sam"]) == 2  # no SAM weights
    assert "proposer.sam.checkpoint" in error_of(capsys)
    assert not list(tmp_path.glob("outputs/*"))
    named = tmp_path / "named"
    assert main(["test", "experiment=smoke", "data.max_images=1", "proposer.name=sam", f"output_dir={named}"]) == 2
    assert "proposer.sam.checkpoint" in error_of(capsys) and not named.exists()  # weights checked before the folder
    assert main(["test", "experiment=smoke", f"data.root={tmp_path / 'no-data'}", f"output_dir={named}"]) == 2
    assert "does not exist" in error_of(capsys)
    assert not named.exists()  # the folder the run made is taken back (issue 28 case 5: it stayed, empty)
