"""`method=NAME`: one folder of method files; the peer methods behind the method seam (the tiny
OpenAI-format CLIP); a new peer from outside the package."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_benchmark
from PIL import Image

from rim_bench.commands import plan
from rim_bench.commands.api import RIM
from rim_bench.commands.cli import main
from rim_bench.core.config import config_hash, load_config, resolve
from rim_bench.core.config_index import CONFIG_DIR
from rim_bench.core.errors import ConfigError
from rim_bench.run.assembly import Assembly
from rim_bench.run.methods import PixelMethod, result_spec
from rim_bench.run.metrics import confusion_matrix, prediction_confusion_matrix

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


def test_the_pixel_method_counts_in_the_result_hash_and_the_region_path_hash_is_unchanged():
    rim = resolve(load_config(["experiment=smoke"]))
    assert "pixel" not in result_spec(rim) and "pipeline" not in result_spec(rim)  # the region path's hashes as before
    assert set(result_spec(rim)) == {"seed", "data", "proposer", "featurizer", "pooling", "references", "matcher",
                                     "segmenter", "precision"}  # what it was before there were method kinds
    sclip = resolve(load_config(["experiment=smoke", "method=sclip"]))
    assert result_spec(sclip)["pixel"]["method"] == "sclip" and "proposer" not in result_spec(sclip)
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


def test_a_pixel_method_predicts_its_label_map_alone_and_is_scored_on_it():
    """The method's prediction is the labeller's own label map, with no regions faked; it is scored as
    a label map."""
    method = Assembly(load_config(["experiment=smoke", "method=naclip"])).method()
    method.set_vocabulary([["background"], ["cat", "kitten"], ["dog"]], torch.device("cpu"))
    image = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    pred = method(image)
    assert method.pipeline is not None and method.pipeline.labeller is not None
    direct = method.pipeline.labeller(image)
    assert torch.equal(pred.label_map, direct)
    assert pred.region_map is None and pred.scores is None and pred.region_labels is None
    target = torch.randint(0, 3, (40, 56))
    assert torch.equal(prediction_confusion_matrix(pred, target, 3), confusion_matrix(direct, target, 3))


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
        assembly.method().set_vocabulary([["a"], ["b"], ["c"]], torch.device("cpu"))


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
    assert module.cfg.method == "maskclip" and isinstance(module.method, PixelMethod)
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


# A peer from outside the package: one module (a registered per-pixel stage) and one settings file.
NEW_PEER = '''
from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor, nn

from rim_bench.core.params import GIVEN, FileWeights, Range
from rim_bench.core.registry import PIXEL_METHODS


@PIXEL_METHODS.register("brightness")
class Brightness:
    """Labels a pixel by its brightness band: band i of `bands` is class i mod C."""

    @classmethod
    def weights(cls, params: dict, key: str) -> list[FileWeights]:
        return [] if params["model"] == "none" else [FileWeights(f"{key}.model", params["model"], "a gain file")]

    def __init__(self, model: str = "none", bands: Annotated[int, Range(1)] = 4,
                 text_dir: Annotated[object, GIVEN] = None, precision: Annotated[object, GIVEN] = None):
        self.bands = bands
        self.module = nn.Linear(1, 1)  # its "weights": they follow the run to its device

    def for_vocabulary(self, vocabulary: list[list[str]]):
        classes = len(vocabulary)

        def label(image: Tensor) -> Tensor:
            bright = image.float().mean(0) / 256
            return (bright * self.bands).long().clamp(max=self.bands - 1) % classes

        return label
'''
NEW_PEER_SETTINGS = """
pipeline: pixel
pixel:
  name: brightness
  brightness: {bands: 2}
benchmarks:
  smoke: {pixel: {brightness: {bands: 3}}}
"""


@pytest.fixture
def new_peer(tmp_path: Path):
    from rim_bench.core.registry import PIXEL_METHODS

    (tmp_path / "my_peer.py").write_text(NEW_PEER)
    sys.path.insert(0, str(tmp_path))
    importlib.import_module("my_peer")
    settings = tmp_path / "brightness.yaml"
    settings.write_text(NEW_PEER_SETTINGS)
    yield settings
    sys.path.remove(str(tmp_path))
    sys.modules.pop("my_peer")
    PIXEL_METHODS._builders.pop("brightness")


def test_a_new_peer_is_one_module_and_one_settings_file(new_peer: Path, tmp_path: Path, smoke_root, capsys):
    """Through test, plan, compare and the API, with nothing in run/ or commands/ knowing it."""
    out = tmp_path / "run"
    assert main(["test", "experiment=smoke", f"method={new_peer}", f"output_dir={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bank"] is None and metrics["num_images"] == 24 and "pixel method" in metrics["seconds"]
    assert "bands: 3" in (out / "config.yaml").read_text()  # its smoke setting, from its own file
    # plan: its weights file is checked, then its own stages are projected
    assert main(["plan", "experiment=smoke", f"method={new_peer}", f"pixel.brightness.model={tmp_path / 'gain'}"]) == 2
    assert f"pixel.brightness.model: no file '{tmp_path / 'gain'}' (a gain file)" in capsys.readouterr().err
    report = plan.run_plan(load_config(["experiment=smoke", f"method={new_peer}", f"data.root={smoke_root}"]))
    assert {"pixel method", "text embeddings"} <= {row["stage"] for row in report["projection"]}
    # compare: its row, described from its own settings
    assert main(["compare", "experiment=smoke", f"methods=[{new_peer}]", "data.max_images=2",
                 f"output_dir={tmp_path / 'cmp'}"]) == 0
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| brightness |" in table and "brightness's own: none" in table
    # the API
    rim = RIM.from_config("smoke", method=str(new_peer))
    assert rim.set_vocabulary(["dark", "mid", "bright"]) is None
    result = rim.segment(torch.full((3, 8, 8), 250, dtype=torch.uint8))
    assert result.region_map is None and result.label_map.unique().tolist() == [2]
