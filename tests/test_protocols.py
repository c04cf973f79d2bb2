"""Peer protocols as presets (`protocol=NAME`, configs/protocol/) and the published numbers' protocols."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rim_bench.commands.cli import main
from rim_bench.commands.compare import PUBLISHED, comparison_markdown, published
from rim_bench.core.config import CONFIG_DIR, load_config
from rim_bench.core.errors import ConfigError
from rim_bench.run.assembly import Assembly


def test_sclip_protocol_sets_its_values_and_per_benchmark_ones():
    cfg = load_config(["experiment=voc21", "protocol=sclip"])
    assert cfg.protocol == "sclip"
    dinov2 = cfg.featurizer.dinov2
    assert (dinov2.input_size, dinov2.window, dinov2.stride) == (336, 224, 112)
    background = cfg.segmenter.paint.background
    assert background.rule == "probability" and background.probability.threshold == 0.1
    assert background.probability.temperature == 1 / 65 and cfg.data.classes == "ours_stuff_background_voc21"
    assert load_config(["experiment=coco_stuff171", "protocol=sclip"]).featurizer.dinov2.input_size == 448
    context60 = load_config(["experiment=context60", "protocol=sclip"])
    assert context60.data.classes is None  # single "background" word
    # SCLIP's logit scale per benchmark: 65 on VOC21, 50 on Context60 and COCO-Object, 40 elsewhere.
    for benchmark, scale in [("context60", 50), ("coco_object", 50), ("voc20", 40), ("ade20k", 40)]:
        cfg = load_config([f"experiment={benchmark}", "protocol=sclip"])
        assert cfg.segmenter.paint.background.probability.temperature == 1 / scale, benchmark
    # The command line still wins over the protocol.
    overridden = load_config(["experiment=voc21", "protocol=sclip", "featurizer.dinov2.stride=224"])
    assert overridden.featurizer.dinov2.stride == 224


def test_naclip_protocol_has_no_window_on_voc_and_logit_scale_40():
    voc21 = load_config(["experiment=voc21", "protocol=naclip"])
    assert voc21.featurizer.dinov2.window is None and voc21.featurizer.dinov2.input_size == 336
    assert voc21.segmenter.paint.background.probability.temperature == 1 / 40
    context60 = load_config(["experiment=context60", "protocol=naclip"])
    assert (context60.featurizer.dinov2.window, context60.segmenter.paint.background.probability.temperature) == \
        (224, 1 / 40)
    assert load_config(["experiment=cityscapes", "protocol=naclip"]).featurizer.dinov2.input_size == 560


def test_freeda_protocol_and_unknown_protocol():
    cfg = load_config(["experiment=voc21", "protocol=freeda"])
    dinov2 = cfg.featurizer.dinov2
    assert (dinov2.input_size, dinov2.window, dinov2.stride) == (448, 448, 224)
    background = cfg.segmenter.paint.background
    assert background.rule == "score" and background.score.threshold == 0.4
    assert background.references is False  # FreeDA builds no background prototypes: a constant channel at 0.4
    assert load_config(["experiment=voc21"]).protocol is None
    with pytest.raises(ConfigError, match="protocol 'mmseg' not found.*known protocols: freeda, naclip, sclip"):
        load_config(["experiment=voc21", "protocol=mmseg"])


def test_our_stuff_background_class_files_keep_the_label_order():
    from rim_bench.data.classes import read_classes

    for name in ("voc21", "coco_object"):
        plain, stuffed = read_classes(name), read_classes(f"ours_stuff_background_{name}")
        assert [c[0] for c in plain] == [c[0] for c in stuffed]
        stuff = set(stuffed[0][1:])
        assert len(stuff) >= 17 and not stuff & {n for c in stuffed[1:] for n in c}, name


def test_every_published_number_records_its_protocol():
    raw = yaml.safe_load(PUBLISHED.read_text())
    presets = {p.stem for p in (CONFIG_DIR / "protocol").glob("*.yaml")}
    assert set(raw["protocols"]) == presets  # every preset's settings are spelled out
    for name, entry in raw["methods"].items():
        assert isinstance(entry.get("protocol"), str) and entry["protocol"], name
    table = raw["methods"]
    assert table["SCLIP"]["protocol"] == "sclip" and table["NACLIP"]["protocol"] == "naclip"
    assert table["FreeDA"]["protocol"] == "freeda"
    rows = {r["method"]: r for r in published("voc21")}
    assert rows["SCLIP"]["preset"] == "sclip" and rows["Trident"]["preset"] is None
    assert rows["SCLIP"]["protocol"].startswith("sclip: short_side=336") and "336" in rows["Trident"]["protocol"]


def test_published_rows_are_marked_only_where_the_peers_own_method_and_settings_ran():
    row = {"method": "rim", "mIoU": 50.0, "mAcc": 60.0, "aAcc": 70.0, "num_images": 3, "protocol": "sclip",
           "background": "probability (temperature=0.01, threshold=0.1)"}
    lines = comparison_markdown([row], "voc21", published("voc21")).splitlines()
    assert "| no |" in next(line for line in lines if line.startswith("| SCLIP |"))  # RIM under SCLIP's preset
    lines = comparison_markdown([row], "voc21", published("voc21"), {"sclip"}).splitlines()
    sclip = next(line for line in lines if line.startswith("| SCLIP |"))
    naclip = next(line for line in lines if line.startswith("| NACLIP |"))
    assert "| yes (sclip) |" in sclip and "| no |" in naclip and "short_side=336" in sclip
    assert "| sclip | probability (temperature=0.01, threshold=0.1) |" in "\n".join(lines)


@pytest.mark.parametrize("overrides, own", [
    (["method=sclip"], True), (["method=naclip"], True),
    (["method=sclip", "pixel.clip.logit_scale=100"], False),  # one setting not the peer's
    (["method=sclip", "protocol=sclip"], False), (["method=rim"], False), ([], False),
])
def test_a_run_has_the_peers_own_settings_only_unchanged(overrides: list[str], own: bool):
    described = Assembly(load_config(["experiment=voc21", *overrides])).method().describe()
    assert bool(described["own_settings"]) is own


def test_compare_runs_under_a_protocol(tmp_path: Path):
    out = tmp_path / "cmp"
    small = ["data.max_images=1", "references.exemplars.n_subcategories=1",
             "references.exemplars.images_per_subcategory=1"]
    assert main(["compare", "experiment=smoke", "protocol=sclip", "methods=[rim,cosine]", *small,
                 f"output_dir={out}"]) == 0
    table = (out / "compare.md").read_text()
    assert "| rim |" in table and "| sclip | probability (temperature=0.025, threshold=0.1) |" in table
    saved = yaml.safe_load((out / "rim" / "config.yaml").read_text())
    assert saved["protocol"] == "sclip" and saved["featurizer"]["dinov2"]["input_size"] == 336
    assert json.loads((out / "compare.json").read_text())["measured"][1]["protocol"] == "sclip"
