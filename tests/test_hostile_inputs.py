"""Issue 11: what an adversarial user can feed rim-bench, case by case as the issue numbers them.

Untrusted ids and names never become paths outside their folder or unescaped markup, no
run overwrites another, and every bad input is one line naming the file or key. The data
sets are copies of the session's smoke benchmark, damaged by each test.

Issue 20's cases, each with a test that failed before its fix, are in the files beside this one:
case 1, 2, 6 (inputs never outputs, one writer per folder, names that collide) in
test_hostile_outputs.py; 3, 11, 12 (missing data, one line per error) in test_hostile_errors.py;
4 (NaN and infinity) in test_hostile_config.py; 5, 10 (verified caches) in test_hostile_caches.py;
7, 8, 9 (bounded work, signals, a dead rank 0, random sweeps) in test_hostile_bounded.py.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SPLIT, error_of, fake_finished_runs, label_out_of_range, smoke_copy_args, split_ids
from omegaconf import OmegaConf
from PIL import Image

from rim_bench.commands.cli import main
from rim_bench.core.config import config_hash, load_config, resolve
from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.io import file_in, remove_stale, safe_name, set_aside
from rim_bench.data.base import read_image
from rim_bench.run import runner
from rim_bench.run.assembly import Assembly
from rim_bench.run.datamodule import build_dataset
from rim_bench.run.datasets import check_data
from rim_bench.run.methods import result_spec

# ----------------------------------------------------------------- 1. ids become paths


def test_safe_name_bounds_hashes_and_maps_dot_names():
    assert safe_name("smoke_0000") == "smoke_0000"  # a plain id keeps its name
    names = [safe_name(t) for t in (".", "..", "", "a/b", "a_b", "x" * 300, "é" * 300, "/abs/path/v", "../../x/v")]
    assert len(set(names)) == len(names)  # different texts, different files
    for name in names:
        assert name not in (".", "..", "") and "/" not in name and len(name) <= 96 and name.isascii()
        assert safe_name(name) == name  # a safe name stays as it is


def test_unsafe_ids_are_refused_naming_the_split_file_and_line(data: Path, capsys, no_models):
    ids = split_ids(data)
    label = data / "SegmentationClass" / f"{ids[0]}.png"
    before = label.read_bytes()
    hostile = [f"{data / 'SegmentationClass' / ids[0]}", "../../../x/v", "sub/../../v", "a\0b"]
    (data / SPLIT).write_text("\n".join([*ids[:3], *hostile]) + "\n")
    with pytest.raises(DataError) as error:
        build_dataset(OmegaConf.create({"name": "voc_layout", "root": str(data), "split": "val",
                                        "classes": "smoke", "max_images": None, "skip_bad": False}))
    message = str(error.value)
    assert "\n" not in message and message.startswith("4 of 7 samples")
    assert f"{data / SPLIT}:4: id '{data}" in message and "is an absolute path" in message
    assert f"{data / SPLIT}:5: id '../../../x/v' has a '..' part" in message and "(and 1 more)" in message
    # `test` stops before any model loads, with save_predictions and overlays on: nothing is written anywhere.
    out = data.parent / "out"
    assert main(["test", *smoke_copy_args(data, f"output_dir={out}", "save_predictions=true", "save_overlays=9")]) == 2
    assert "absolute path" in error_of(capsys)
    assert label.read_bytes() == before and not (data.parent.parent / "x").exists()


def test_output_files_stay_in_their_folder(tmp_path: Path):
    out = tmp_path / "predictions"
    for image_id in ("/abs/path/v", "../../../x/v", "..", "sub/x"):
        path = file_in(out, image_id, ".png")
        assert path.parent == out and path.resolve().is_relative_to(out.resolve())
    out.mkdir()
    (out / "evil.png").symlink_to(tmp_path / "elsewhere.png")  # a link placed in the output folder
    with pytest.raises(DataError, match="outside"):
        file_in(out, "evil", ".png")


# ------------------------------------------------------- 2. runs never share a folder


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path, monkeypatch):
    from datetime import datetime

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(runner, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    rim = resolve(load_config(["experiment=smoke"]))
    cosine = resolve(load_config(["experiment=smoke", "matcher.name=cosine"]))
    first, second = runner.output_folder(rim), runner.output_folder(cosine)
    assert first != second and first.is_dir() and second.is_dir()
    assert [first.name, second.name] == ["smoke-20260102-030405", "smoke-20260102-030405-2"]


def test_a_folder_with_another_configs_results_is_refused(tmp_path: Path):
    rim = resolve(load_config(["experiment=smoke", f"output_dir={tmp_path}"]))
    assert runner.output_folder(rim) == tmp_path  # claimed for `test`
    (tmp_path / "metrics.json").write_text(json.dumps({"result_hash": config_hash(result_spec(rim))}))
    assert runner.output_folder(rim) == tmp_path  # the same config resumes / overwrites
    cosine = resolve(load_config(["experiment=smoke", "matcher.name=cosine", f"output_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="holds the results of another config .* choose another output_dir"):
        runner.output_folder(cosine)


def test_sweep_and_compare_rerun_resume_in_a_folder_named_by_what_they_run(tmp_path: Path, monkeypatch):
    from rim_bench.commands.compare import run_compare
    from rim_bench.commands.sweep import load_sweep, run_sweep

    runs, sweep_file = fake_finished_runs(monkeypatch, tmp_path)
    for _ in range(2):
        run_sweep(["experiment=smoke"], load_sweep(str(sweep_file)))
        run_compare(["experiment=smoke", "methods=[rim,cosine]"])
    assert len(runs) == 4  # the second time, every point and method was found done
    folders = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert len(folders) == 2 and folders[0].startswith("compare-smoke-") and folders[1].startswith("sweep-smoke-t-")
    run_sweep(["experiment=smoke", "data.max_images=2"], load_sweep(str(sweep_file)))
    assert len(list((tmp_path / "outputs").iterdir())) == 3  # another config, another folder


# --------------------------------------------------------------- 3. markup in the report


def test_report_escapes_every_string_and_holds_its_pictures(tmp_path: Path):
    from rim_bench.commands.report import build_report

    hostile = 'x" onerror="alert(1)'
    run = tmp_path / "results" / "<b>run"
    (run / "overlays").mkdir(parents=True)
    Image.new("RGB", (4, 4), (200, 10, 10)).save(run / "overlays" / f"{hostile}.png")
    (run / "metrics.json").write_text(json.dumps({
        "mIoU": 1.0, "mAcc": 2.0, "aAcc": 3.0, "num_images": 1, "per_class_iou": {"<script>alert(2)</script>": 5.0}}))
    (run / "config.yaml").write_text("experiment: <img src=x onerror=alert(3)>\ndata: {name: smoke}\n"
                                     "matcher: {name: rim}\n")
    _, page_path = build_report([run], tmp_path / "report")
    page = page_path.read_text()
    for raw in ('onerror="alert', "<script>", "<b>run", "<img src=x"):
        assert raw not in page, raw
    assert html.escape(hostile) in page and "&lt;script&gt;" in page and "&lt;b&gt;run" in page
    # self-contained: moved elsewhere, with the results gone, every picture it shows is there
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "report", moved)
    shutil.rmtree(tmp_path / "results")
    sources = [html.unescape(s.split('"')[0]) for s in (moved / "report.html").read_text().split('src="')[1:]]
    assert sources and all((moved / s).is_file() and not s.startswith("..") for s in sources)


# ------------------------------------------------------------- 4. one line, and early


@pytest.mark.parametrize("override, fragment", [
    ("data.max_images=abc", "'data.max_images' must be int or null, got str 'abc'"),
    ("seed=null", "'seed' cannot be null"),
    ("segmenter.paint.min_score=abc", "'segmenter.paint.min_score' must be a number or null"),
    ("matcher.rim.alpha=2", "'matcher.rim.alpha' must be in [0, 1], got 2"),
    ("data.root=[unclosed", "cannot parse 'data.root=[unclosed'"),
    ("output_dir=/proc/x", "output_dir: cannot create '/proc/x'"),
    ("cache_dir=/proc/x", "cache_dir: cannot create '/proc/x'"),
    ("data.root=${nope.nope}", "Interpolation key 'nope.nope' not found"),
])
def test_bad_values_fail_at_once_in_one_line(override: str, fragment: str, capsys, no_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["test", "experiment=smoke", "data.max_images=1", override]) == 2
    assert fragment in error_of(capsys)
    assert not (tmp_path / "outputs").exists()  # a failed run leaves no empty result folder


def test_segment_into_an_existing_file(tmp_path: Path, smoke_root: Path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    image = next((smoke_root / "JPEGImages").glob("*.jpg"))
    assert main(["segment", str(image), "--classes", "sun,leaf", "experiment=smoke", "--out", str(taken)]) == 2
    assert f"--out '{taken}' is a file" in error_of(capsys) and taken.read_text() == "mine"


def test_a_long_non_ascii_class_name_is_one_line_and_bounded_file_names(tmp_path: Path, smoke_root: Path, capsys):
    from rim_bench.stages.references.bank import shard_path

    name = "猫" * 300
    shard = shard_path(tmp_path, [name], f"fat {name}")  # where its references would be stored
    shard.parent.mkdir()
    shard.write_bytes(b"")
    assert len(shard.parent.name) <= 96
    image = next((smoke_root / "JPEGImages").glob("*.jpg"))
    assert main(["segment", str(image), "--classes", f"background,{name}", "experiment=tiny",
                 f"cache_dir={tmp_path / 'cache'}", "--out", str(tmp_path / "out")]) == 2
    error = error_of(capsys)
    assert "is longer than the text encoder's 77 tokens; use a shorter class name" in error and len(error) < 300
    # with exemplar references the class names a folder: too long for the file system, and outside root
    for bad, fragment in ((name, "is not a valid folder name: File name too long"), ("../x", "has a '..' part")):
        assert main(["segment", str(image), "--classes", f"background,{bad}", "experiment=smoke",
                     "--out", str(tmp_path / "out")]) == 2
        assert fragment in error_of(capsys)


def test_damaged_shards_and_region_files_are_set_aside_and_named(tmp_path: Path):
    from rim_bench.run.region_cache import RegionCache
    from rim_bench.stages.references.bank import save_shard, shard_or_none

    shard = tmp_path / "generated" / "k" / "cat" / "0123.safetensors"
    save_shard(shard, {"images": torch.zeros(1, 2, 2, 3, dtype=torch.uint8)}, {"seeds": [1]})
    assert shard_or_none(shard)[1] == {"seeds": [1]}
    shard.write_bytes(shard.read_bytes()[:40])  # truncated, as by a full disk
    with pytest.warns(UserWarning, match=f"damaged cache entry '{shard}'") as caught:
        assert shard_or_none(shard) is None
    assert len(str(caught[0].message).splitlines()) == 1
    assert not shard.exists() and len(list(shard.parent.glob("0123.safetensors.damaged-*"))) == 1
    regions = RegionCache(tmp_path / "regions")
    regions.put("img", torch.zeros(3, 3, dtype=torch.long), torch.ones(1, 4))
    (tmp_path / "regions" / "img.safetensors").write_bytes(b"\0" * 10)
    with pytest.warns(UserWarning, match="damaged cache entry .*img.safetensors"):
        assert regions.get("img") is None
    assert not (tmp_path / "regions" / "img.safetensors").exists()


def test_a_damaged_generated_image_shard_is_generated_again(tmp_path: Path):
    from rim_bench.commands.api import RIM

    rim = RIM.from_config("tiny", cache_dir=str(tmp_path))
    first = rim.set_vocabulary(["background", "sun"])
    generated = sorted((tmp_path / "generated").rglob("*.safetensors"))
    assert generated
    for path in generated:
        path.write_bytes(b"garbage")
    shutil.rmtree(tmp_path / "banks")
    shutil.rmtree(tmp_path / "references")
    again = RIM.from_config("tiny", cache_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="damaged cache entry .*generated"):
        second = again.set_vocabulary(["background", "sun"])
    assert torch.equal(first.features, second.features)


# -------------------------------------------------------- 5. whole messages, right source


def test_bad_sweep_files_are_blamed_with_their_line(tmp_path: Path, capsys):
    from rim_bench.commands.sweep import load_sweep, run_sweep

    broken = tmp_path / "broken.yaml"
    broken.write_text("parameters:\n  matcher.rim.temperature: [0.1, 0.2\nmethod: grid\n")
    with pytest.raises(ConfigError, match=rf"{broken}: not valid YAML: line \d+, column \d+: .*expected"):
        load_sweep(str(broken))
    typo = tmp_path / "typo.yaml"
    typo.write_text("parameters:\n  matcher.rim.temprature: [0.1, 0.2]\n")
    with pytest.raises(ConfigError, match=rf"{typo} \(point 0\): unknown config key 'matcher.rim.temprature'"):
        run_sweep(["experiment=smoke"], load_sweep(str(typo)))
    assert main(["sweep", "experiment=smoke", f"sweep={broken}"]) == 2
    assert "line 3" in error_of(capsys)


# ---------------------------------------------------------------------------- 6. data


def _write_16bit_grey(path: Path, value: int) -> None:
    Image.fromarray(np.full((8, 8), value, dtype=np.uint16)).save(path)


def _write_16bit_rgb_png(path: Path, rgb: tuple[int, int, int]) -> None:
    """A 48-bit RGB PNG, written by hand (PIL cannot write one)."""
    import struct
    import zlib

    h = w = 4
    row = b"\x00" + np.tile(np.array(rgb, dtype=">u2"), w).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)  # 16 bits per channel, colour type 2 (RGB)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * h))
                     + chunk(b"IEND", b""))


def test_16_bit_images_are_scaled_and_others_refused(tmp_path: Path):
    _write_16bit_grey(tmp_path / "a.png", 32896)  # 128 * 257: mid grey, not white
    assert read_image(tmp_path / "a.png", "RGB")[0, 0].tolist() == [128, 128, 128]
    _write_16bit_rgb_png(tmp_path / "c.png", (65535, 32896, 257))
    assert read_image(tmp_path / "c.png", "RGB")[0, 0].tolist() == [255, 128, 1]
    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(DataError, match="has mode F: expected an 8-bit RGB, L, P or CMYK image"):
        read_image(tmp_path / "f.tiff", "RGB")


def test_check_data_lists_every_problem_in_one_run(data: Path, capsys):
    ids = split_ids(data)
    (data / "SegmentationClass" / f"{ids[0]}.png").unlink()
    (data / "JPEGImages" / f"{ids[1]}.jpg").unlink()
    (data / "JPEGImages" / f"{ids[2]}.jpg").write_bytes(b"not a jpeg")
    label_out_of_range(data, ids[3])
    with Image.open(data / "JPEGImages" / f"{ids[4]}.jpg") as img:
        Image.fromarray(np.zeros(img.size[::-1], dtype=np.float32)).save(data / "JPEGImages" / f"{ids[4]}.tif")
    (data / "JPEGImages" / f"{ids[4]}.tif").replace(data / "JPEGImages" / f"{ids[4]}.jpg")
    (data / SPLIT).write_text("\n".join([*ids, "/etc/passwd", ids[5]]) + "\n")
    assert main(["check-data", *smoke_copy_args(data)]) == 2
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err
    for fragment in (f"{ids[0]}.jpg' has no label", f"{ids[1]}.jpg' of id", f"{ids[2]}.jpg' cannot be read",
                     "values [200] outside", "has mode F", f"{SPLIT}:{len(ids) + 1}: id '/etc/passwd'",
                     f"{SPLIT}:{len(ids) + 2}: id '{ids[5]}' is listed twice (first at {data / SPLIT}:6)"):
        assert fragment in printed.out, fragment
    # of the split's len(ids) + 2 lines: the repeated id's first line is kept (issue 20 case 12)
    assert printed.err.strip().splitlines()[-1].startswith(f"rim-bench: error: 7 of {len(ids) + 2} images")


def test_check_data_bounds_its_list(data: Path, capsys):
    (data / SPLIT).write_text("".join(f"/x/{i}\n" for i in range(80)))
    with pytest.raises(DataError, match="80 of 80 images"):
        check_data(load_config(smoke_copy_args(data)))
    out = capsys.readouterr().out
    assert out.count("absolute path") == 50 and "... and 30 more problems" in out


def test_test_fails_before_scoring_with_the_list_and_skip_bad_scores_the_rest(data: Path, capsys, monkeypatch):
    ids = split_ids(data)[:4]
    (data / SPLIT).write_text("\n".join(ids) + "\n")
    (data / "JPEGImages" / f"{ids[1]}.jpg").write_bytes(b"broken")
    label_out_of_range(data, ids[2])
    real_build = Assembly.pipeline
    monkeypatch.setattr(Assembly, "pipeline", lambda *a, **k: pytest.fail("models loaded"))
    assert main(["test", *smoke_copy_args(data, f"output_dir={data.parent / 'strict'}")]) == 2
    assert f"1 of 4 samples in {data} have problems: '{data / 'JPEGImages' / ids[1]}.jpg' cannot" in error_of(capsys)
    monkeypatch.setattr(Assembly, "pipeline", real_build)
    out = data.parent / "lenient"
    assert main(["test", *smoke_copy_args(data, f"output_dir={out}", "data.skip_bad=true")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and sorted(metrics["skipped"]) == sorted([ids[1], ids[2]])
    assert "values [200] outside" in metrics["skipped"][ids[2]]
    assert "(2 images; 2 unreadable skipped:" in capsys.readouterr().out


# ---------------------------------------------------------------------- 7. leftovers


def test_stale_temporary_folders_are_removed(tmp_path: Path, monkeypatch):
    import tempfile

    from rim_bench.data.smoke import generate_smoke
    from rim_bench.stages.backbones.clip import tiny_clip_tokenizer

    old, young = tmp_path / ".smoke.abc.tmp", tmp_path / ".smoke.def.tmp"  # left by killed generations
    for folder in (old, young):
        folder.mkdir()
    os.utime(old, (time.time() - 7200,) * 2)
    generate_smoke(tmp_path / "smoke", num_images=2)
    assert not old.exists() and young.exists()  # a young one may be another process's, still running
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tiny_clip_tokenizer()
    assert not list(tmp_path.glob("rim-bench-tiny-clip-*"))
    assert remove_stale(tmp_path, ".smoke.*.tmp", older_than_s=0) == [young]


def test_set_aside_moves_and_warns_once(tmp_path: Path):
    entry = tmp_path / "bank"
    entry.mkdir()
    with pytest.warns(UserWarning, match="damaged cache entry"):
        aside = set_aside(entry, ValueError("bad\nheader"))
    assert aside.is_dir() and not entry.exists()


def test_every_key_has_a_type_and_every_number_a_range():
    """A key with a null default needs a type, a number a range: a stage parameter in its
    declaration (rim_bench.core.params), another key in rim_bench.core.settings, alike."""
    from rim_bench.core.config import DEFAULT_FILE
    from rim_bench.core.registry import STAGE_KINDS, declarations
    from rim_bench.core.settings import run_declarations

    declared = declarations()
    others = run_declarations()
    # SAM's settings (those of proposer.sam unless set).
    free = ("references.diffusion.sam.",)
    anything = ("segmenter.paint.background.score.threshold",)  # in the matcher's units: any number

    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    written = dict(leaves(OmegaConf.to_container(OmegaConf.load(DEFAULT_FILE))))
    assert set(others) <= set(written), f"declared but not in default.yaml: {set(others) - set(written)}"
    for key, value in written.items():
        if re.search(r"\.(proxy_)?tiny\.", key) or key.endswith(".seed"):  # random test models' sizes; seeds: `seed`
            continue
        if key.split(".")[0] in STAGE_KINDS:
            if key.startswith(free) or key.endswith(".name"):  # `name` picks the variant
                continue
            assert key in declared, f"{key}: not declared by its stage"
            assert value is not None or declared[key].types, f"{key}: null default without a declared type"
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in anything:
                assert declared[key].range is not None, f"{key}: a number without a declared range"
        else:
            assert key in others, f"{key}: not declared in rim_bench.core.settings"
            assert others[key].default == value, f"{key}: default.yaml says {value!r}, the declaration otherwise"
            assert value is not None or others[key].types, f"{key}: null default without a declared type"
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert others[key].range is not None, f"{key}: a number without a declared range"
