"""`method=NAME`: one folder of method files; the peer methods' per-pixel path in the pipeline
(the tiny OpenAI-format CLIP), their settings per benchmark equal to the peers' protocol data."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_benchmark
from PIL import Image

from rim_bench.commands.api import RIM
from rim_bench.commands.cli import main
from rim_bench.core.config import config_hash, load_config, resolve, result_spec
from rim_bench.core.config_index import CONFIG_DIR
from rim_bench.core.errors import ConfigError
from rim_bench.run.assembly import Assembly
from rim_bench.run.metrics import confusion_matrix, region_confusion_matrix
from rim_bench.stages.pixel.protocol import PixelSettings, load_settings

PEERS = ("maskclip", "sclip", "naclip", "clearclip", "proxyclip")
BENCHMARKS = ("voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff171", "ade20k", "cityscapes")


def test_one_folder_of_methods_and_the_real_model_piece_apart():
    methods = sorted(p.stem for p in (CONFIG_DIR / "method").glob("*.yaml"))
    assert {"rim", "cosine", "prototype", "random", "clip_text", "clip_dense", *PEERS} == set(methods)
    assert not (CONFIG_DIR / "baseline").exists()
    assert "real/rim" in (CONFIG_DIR / "experiment" / "rim_voc21.yaml").read_text()
    cfg = load_config(["experiment=smoke", "method=cosine"])
    assert (cfg.method, cfg.matcher.name) == ("cosine", "cosine")
    with pytest.raises(ConfigError, match="method 'nope' not found.*known methods: clearclip"):
        load_config(["experiment=smoke", "method=nope"])


@pytest.mark.parametrize("method", PEERS)
@pytest.mark.parametrize("bench", BENCHMARKS)
def test_a_peer_method_file_sets_the_peers_own_settings_per_benchmark(method: str, bench: str):
    """method=M experiment=B is M's setting on B: every value of the peer's protocol data."""
    clip = resolve(load_config([f"experiment={bench}", f"method={method}"])).pixel.clip
    settings = load_settings(method, bench)
    for field in fields(PixelSettings):
        value = getattr(settings, field.name)
        got = clip[field.name] if field.name != "pamr_dilations" else tuple(clip.pamr_dilations)
        assert got == value, (field.name, got, value)


def test_the_pixel_method_counts_in_the_result_hash_and_the_region_path_hash_is_unchanged():
    rim = resolve(load_config(["experiment=smoke"]))
    assert "pixel" not in result_spec(rim)  # the region path's hashes stay as before
    sclip = resolve(load_config(["experiment=smoke", "method=sclip"]))
    assert result_spec(sclip)["pixel"]["method"] == "sclip"
    other = resolve(load_config(["experiment=smoke", "method=sclip", "pixel.clip.logit_scale=50"]))
    assert config_hash(result_spec(other)) != config_hash(result_spec(sclip))


@pytest.mark.parametrize("method", PEERS)
def test_every_peer_method_runs_on_the_smoke_set(method: str, tmp_path: Path):
    out = tmp_path / method
    assert main(["test", "experiment=smoke", f"method={method}", "data.max_images=3", "save_predictions=true",
                 f"output_dir={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and 0.0 <= metrics["mIoU"] <= 100.0 and metrics["bank"] is None
    assert "pixel method" in metrics["seconds"] and "text embeddings" in metrics["seconds"]
    assert len(list((out / "predictions").glob("*.png"))) == 3
    assert f"method: {method}" in (out / "config.yaml").read_text()


def test_the_per_pixel_path_scores_the_core_label_map_with_the_same_confusion_matrix():
    """The pipeline's prediction is the core's label map; its region-form confusion matrix equals
    the pixel confusion matrix of that map."""
    assembly = Assembly(load_config(["experiment=smoke", "method=naclip"]))
    pipeline = assembly.pixel_pipeline()
    vocabulary = [["background"], ["cat", "kitten"], ["dog"]]
    pipeline.set_vocabulary(vocabulary)
    image = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    pred = pipeline(image)
    assert pipeline.segmenter is not None
    direct = pipeline.segmenter(image)
    assert torch.equal(pred.label_map, direct)
    target = torch.randint(0, 3, (40, 56))
    assert torch.equal(region_confusion_matrix(pred.painted_regions, pred.region_labels, target, 3),
                       confusion_matrix(direct, target, 3))


def test_a_peer_method_on_a_voc_layout_set_with_its_own_class_file(tmp_path: Path):
    write_benchmark("voc21", tmp_path / "data", n=2, size=(24, 32))
    out = tmp_path / "out"
    assert main(["test", "experiment=voc21", "method=sclip", f"data.root={tmp_path / 'data'}",
                 "pixel.clip.model=tiny", f"output_dir={out}"]) == 0
    saved = (out / "config.yaml").read_text()
    assert "classes: sclip/cls_voc21.txt" in saved and "logit_scale: 65" in saved and "area_thd: 0.1" in saved
    assert json.loads((out / "metrics.json").read_text())["num_images"] == 2


def test_a_class_file_of_another_benchmark_is_a_one_line_error(tmp_path: Path):
    assembly = Assembly(load_config(["experiment=smoke", "method=sclip", "pixel.clip.classes=sclip/cls_voc20.txt"]))
    with pytest.raises(ConfigError, match="pixel.clip.classes: .*cls_voc20.txt' has 20 classes, the benchmark 3"):
        assembly.pixel_pipeline().set_vocabulary([["a"], ["b"], ["c"]])


def test_the_api_takes_method_and_segments_per_pixel(tmp_path: Path):
    rim = RIM.from_config("smoke", method="clearclip")
    assert rim.cfg.method == "clearclip" and rim.cfg.pixel.clip.method == "clearclip"
    assert rim.set_vocabulary(["background", "cat", "dog"]) is None  # no bank
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(image)
    result = rim.segment(image)
    assert result.label_map.shape == (30, 40) and int(result.label_map.max()) < 3


def test_the_lightning_module_and_segment_take_method(tmp_path: Path):
    from rim_bench.run.lit_module import RIMModule

    module = RIMModule.from_config("smoke", method="maskclip")
    assert module.cfg.method == "maskclip" and module.assembly.per_pixel
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "seg"
    assert main(["segment", str(image), "--classes", "cat,dog", "experiment=smoke", "method=sclip",
                 "--out", str(out)]) == 0
    written = sorted(p.name for p in out.rglob("*.png"))
    assert written and "method: sclip" in next(out.rglob("config.yaml")).read_text()


def test_the_clip_file_is_given_as_featurizer_clip_model(tmp_path: Path, capsys):
    """Issue 22's command: `method=sclip featurizer.clip.model=ViT-B-16.pt` points the peer at the file
    (pixel.clip.model follows featurizer.clip.model; set alone, pixel.clip.model wins)."""
    given = resolve(load_config(["experiment=voc21", "method=sclip", "featurizer.clip.model=/w/ViT-B-16.pt"]))
    assert given.pixel.clip.model == "/w/ViT-B-16.pt"
    direct = resolve(load_config(["experiment=voc21", "method=sclip", "pixel.clip.model=/x/ViT-B-16.pt"]))
    assert direct.pixel.clip.model == "/x/ViT-B-16.pt"
    assert resolve(load_config(["experiment=smoke", "method=sclip"])).pixel.clip.model == "tiny"
    missing = tmp_path / "ViT-B-16.pt"
    assert main(["test", "experiment=smoke", "method=sclip", f"featurizer.clip.model={missing}",
                 f"output_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert f"pixel.clip.model: no file '{missing}'" in err and "featurizer.clip.model=PATH" in err


def test_a_peer_method_checks_its_own_weights_only(tmp_path: Path, monkeypatch, capsys):
    """Offline, with the CLIP file there, a peer run gets past the weight checks to the data: it does
    not ask for the region stages' models (DINOv2, SAM), which it never loads."""
    import torch

    from rim_bench.stages.backbones.openai_clip import Architecture, random_state_dict

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    arch = Architecture(width=64, layers=1, patch=16, grid=2, embed_dim=32, context=77, vocab=300,
                        text_width=32, text_layers=1)
    checkpoint = tmp_path / "ViT-B-16.pt"
    torch.save(random_state_dict(arch), checkpoint)
    assert main(["test", "experiment=voc21", "method=sclip", f"featurizer.clip.model={checkpoint}",
                 f"data.root={tmp_path / 'no-data'}", f"output_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert "data root" in err and "does not exist" in err and "dinov2" not in err
