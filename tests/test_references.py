"""The diffusion reference bank with tiny random Stable Diffusion, SAM and DINOv2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rim_bench.core.config import load_config, resolve
from rim_bench.core.errors import ConfigError, DataError
from rim_bench.run.assembly import Assembly
from rim_bench.stages.backbones.stable_diffusion import load_stable_diffusion
from rim_bench.stages.references import diffusion
from rim_bench.stages.references.attention import (
    AttentionStore,
    binarize,
    capture_cross_attention,
    class_word,
    sam_prompt,
    word_token_indices,
)
from rim_bench.stages.references.diffusion import generate_with_attention, reference_seed

SUBCATEGORIES = """\
background: [background, grey wall, brown floor]
sun: [sun, setting sun]
leaf: [leaf, green leaf]
"""
CLASSES = [["background"], ["sun", "sunlight"], ["leaf", "foliage"]]


@pytest.fixture(scope="module")
def pipe():
    return load_stable_diffusion("tiny", "cpu", {"seed": 0, "sample_size": 32})


def test_attention_maps_shape_and_range(pipe):
    images, maps = generate_with_attention(pipe, "a photo of a cat", "cat", [1, 2], 64, 3, 7.5, (16,))
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    assert maps.shape == (2, 64, 64) and maps.dtype == torch.float32
    assert float(maps.min()) == 0.0 and float(maps.max()) == 1.0
    assert not torch.equal(maps[0], maps[1])  # two seeds, two images, two maps


def test_same_seed_same_image_and_map(pipe):
    a = generate_with_attention(pipe, "a photo of a dog", "dog", [5], 64, 3, 7.5, (16, 8))
    b = generate_with_attention(pipe, "a photo of a dog", "dog", [5], 64, 3, 7.5, (16, 8))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_original_processors_are_restored_even_after_an_error(pipe):
    before = dict(pipe.unet.attn_processors)
    generate_with_attention(pipe, "a photo of a cat", "cat", [1], 64, 2, 7.5, (16,))
    assert all(pipe.unet.attn_processors[k] is v for k, v in before.items())
    store = AttentionStore([[1]], (16,), guided=True)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_cross_attention(pipe.unet, store):
            assert type(pipe.unet.attn_processors[next(k for k in before if "attn2" in k)]).__name__ == \
                "CapturingProcessor"
            raise RuntimeError("boom")
    assert all(pipe.unet.attn_processors[k] is v for k, v in before.items())


def test_missing_resolution_names_the_available_ones(pipe):
    with pytest.raises(ConfigError, match=r"no cross-attention layer at resolution \[3\]; this UNet has \[16\]"):
        generate_with_attention(pipe, "a photo of a cat", "cat", [1], 64, 2, 7.5, (3,))


def test_larger_tau_never_gives_a_larger_area(pipe):
    _, maps = generate_with_attention(pipe, "a photo of a leaf", "leaf", [3], 64, 3, 7.5, (16,))
    areas = [int(binarize(maps[0], t).sum()) for t in np.linspace(0, 1, 21)]
    assert areas == sorted(areas, reverse=True) and areas[0] == 64 * 64 and areas[-1] >= 1


def test_multi_token_words(pipe):
    tok = pipe.tokenizer
    prompt = "a photo of a tabby sphynx cat"
    assert len(word_token_indices(tok, prompt, "cat")) == 1  # a whole token in the tiny vocabulary
    sphynx = word_token_indices(tok, prompt, "sphynx")
    assert len(sphynx) > 1 and sphynx == list(range(sphynx[0], sphynx[0] + len(sphynx)))
    assert tok.convert_ids_to_tokens(tok(prompt).input_ids[sphynx[0]:sphynx[-1] + 1])[-1] == "x</w>"
    with pytest.raises(ConfigError, match="'dog' is not in the prompt"):
        word_token_indices(tok, prompt, "dog")
    # A multi-token word's map is the mean of its tokens' maps (heads averaged too).
    probs = torch.rand(2 * 2, 16, 10)  # (batch 1 guided → 2, heads 2), 4x4 pixels, 10 tokens
    store = AttentionStore([[3, 4]], (4,), guided=True)
    store.add(probs, heads=2)
    expected = probs.reshape(2, 2, 16, 10)[1][:, :, [3, 4]].mean(dim=(0, 2)).reshape(4, 4)
    torch.testing.assert_close(store.sums[4][0], expected)
    _, maps = generate_with_attention(pipe, "a photo of a dining table", "dining table", [1], 64, 2, 7.5, (16,))
    assert maps.shape == (1, 64, 64)


@pytest.mark.parametrize("sub, names, word", [
    ("tabby cat", ["cat", "kitty"], "cat"),
    ("dining table", ["diningtable", "dining table", "table"], "dining table"),
    ("kitten", ["cat"], "kitten"),
    ("cat lying on a sofa", ["cat"], "cat"),
])
def test_class_word(sub, names, word):
    assert class_word(sub, names) == word


def test_sam_prompt_from_binary_map():
    binary = np.zeros((20, 30), dtype=bool)
    binary[5:10, 8:20] = True
    attention = np.zeros((20, 30))
    attention[7, 12] = 1.0
    box, points = sam_prompt(binary, attention, "box_points", num_points=1)
    assert box.tolist() == [8, 5, 20, 10] and points.tolist() == [[12, 7]]
    assert sam_prompt(binary, attention, "box", 1)[1] is None
    box, points = sam_prompt(binary, attention, "points", 3)
    assert box is None and 1 <= len(points) <= 3 and all(binary[int(y), int(x)] for x, y in points)


def test_reference_seed_is_stable_and_distinct():
    assert reference_seed(0, "cat", "tabby cat", 0) == reference_seed(0, "cat", "tabby cat", 0)
    seeds = {reference_seed(s, c, "x", i) for s in (0, 1) for c in ("a", "b") for i in range(3)}
    assert len(seeds) == 12


# ---------------------------------------------------------------------------- the bank


def _cfg(tmp_path: Path, *overrides: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    subs = tmp_path / "subs.yaml"
    subs.write_text(SUBCATEGORIES)
    return resolve(load_config([
        "experiment=smoke", f"cache_dir={tmp_path / 'cache'}", "references.name=diffusion",
        "references.diffusion.model=tiny", f"references.diffusion.subcategories={subs}",
        "references.diffusion.image_size=64", "references.diffusion.num_inference_steps=2",
        "references.diffusion.sam.model_type=tiny", *overrides,
    ]))


def _bank(cfg, classes=CLASSES):
    build = Assembly(cfg).bank(classes)
    return build.bank, build.path, build.cached


@pytest.fixture
def count_generations(monkeypatch):
    calls = []
    real = diffusion.generate_with_attention

    def counting(pipe, prompt, *args, **kwargs):
        calls.append(prompt)
        return real(pipe, prompt, *args, **kwargs)

    monkeypatch.setattr(diffusion, "generate_with_attention", counting)
    return calls


def test_bank_shapes_sheets_and_report(tmp_path: Path, count_generations):
    cfg = _cfg(tmp_path)
    bank, folder, hit = _bank(cfg)
    assert not hit and len(count_generations) == 14  # 3 + 2 + 2 subcategories, 2 images each, one at a time
    report = json.loads((folder / "references.json").read_text())
    kept = sum(r["kept"] for r in report.values())
    assert kept == len(bank) and kept + sum(r["dropped"] for r in report.values()) == 14
    assert bank.features.shape == (kept, cfg.featurizer.dinov2.tiny.hidden_size)
    assert bank.features.dtype == torch.float32
    assert bank.subcategory_names[:3] == ["background/background", "background/grey wall", "background/brown floor"]
    assert {m["word"] for m in bank.meta} >= {"sun", "leaf"}
    assert sorted(p.name for p in (folder / "sheets").iterdir()) == ["0000_background.png", "0001_sun.png",
                                                                      "0002_leaf.png"]


def test_second_build_is_a_cache_hit(tmp_path: Path, count_generations):
    first, _, _ = _bank(_cfg(tmp_path))
    generated = len(count_generations)
    second, _, hit = _bank(_cfg(tmp_path))
    assert hit and len(count_generations) == generated  # nothing generated again
    assert torch.equal(first.features, second.features)


def test_a_damaged_cached_bank_is_set_aside_and_rebuilt(tmp_path: Path):
    first, folder, _ = _bank(_cfg(tmp_path, "references.diffusion.mask=attention"))
    (folder / "bank.safetensors").write_bytes(b"\x00" * 16)
    with pytest.warns(UserWarning, match=f"damaged cache entry '{folder}'.*cannot be read"):
        second, again, hit = _bank(_cfg(tmp_path, "references.diffusion.mask=attention"))
    assert again == folder and not hit and torch.equal(first.features, second.features)
    assert len(list(folder.parent.glob(f"{folder.name}.damaged-*"))) == 1


def test_interrupted_build_resumes_at_the_first_missing_subcategory(tmp_path: Path, count_generations, monkeypatch):
    real = diffusion.DiffusionReferences._subcategory

    def fail_on_green_leaf(self, ctx, names, sub, store):
        if sub == "green leaf":
            raise KeyboardInterrupt
        return real(self, ctx, names, sub, store)

    monkeypatch.setattr(diffusion.DiffusionReferences, "_subcategory", fail_on_green_leaf)
    with pytest.raises(KeyboardInterrupt):
        _bank(_cfg(tmp_path))
    assert len(count_generations) == 12  # background (3), sun (2) and the first leaf finished, 2 images each
    monkeypatch.setattr(diffusion.DiffusionReferences, "_subcategory", real)
    bank, _, hit = _bank(_cfg(tmp_path))
    assert not hit and count_generations[12:] == ["a photo of a green leaf"] * 2
    fresh, _, _ = _bank(_cfg(tmp_path / "fresh"))
    assert torch.equal(bank.features, fresh.features)  # resuming changes nothing


def test_banks_for_fewer_or_more_subcategories_reuse_the_generated_references(tmp_path: Path, count_generations):
    two, _, _ = _bank(_cfg(tmp_path, "references.diffusion.n_subcategories=2"))
    assert len(count_generations) == 12  # 2 + 2 + 2 subcategories, 2 images each
    one, folder, hit = _bank(_cfg(tmp_path, "references.diffusion.n_subcategories=1"))
    assert not hit and len(count_generations) == 12  # another bank, nothing generated: a subset
    first = [i for i, m in enumerate(two.meta) if m["subcategory"] in ("background", "sun", "leaf")]
    assert torch.equal(one.features, two.features[first])
    assert (folder / "sheets" / "0001_sun.png").is_file()  # sheets come back from the stored strips
    _bank(_cfg(tmp_path, "references.diffusion.n_subcategories=3"))
    assert count_generations[12:] == ["a photo of a brown floor"] * 2  # only background has a third
    import rim_bench.stages.backbones.stable_diffusion as sd

    def no_generator(*args, **kwargs):
        raise AssertionError("Stable Diffusion loaded although every image is stored")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sd, "load_stable_diffusion", no_generator)
        other_tau, _, _ = _bank(_cfg(tmp_path, "references.diffusion.attn_threshold=0.5",
                                     "references.diffusion.n_subcategories=1"))
    assert len(count_generations) == 14  # another tau thresholds the stored images' maps: nothing generated
    assert [m["attention_area"] for m in other_tau.meta] != [m["attention_area"] for m in one.meta]  # re-thresholded


def test_more_images_per_subcategory_generate_only_the_new_ones(tmp_path: Path, monkeypatch):
    counts = []
    real = diffusion.generate_with_attention
    monkeypatch.setattr(diffusion, "generate_with_attention",
                        lambda pipe, prompt, word, seeds, *a, **k: counts.append(len(seeds)) or
                        real(pipe, prompt, word, seeds, *a, **k))
    common = ("references.diffusion.n_subcategories=1", "references.diffusion.mask=attention")
    one, _, _ = _bank(_cfg(tmp_path, *common, "references.diffusion.images_per_subcategory=1"))
    two, _, _ = _bank(_cfg(tmp_path, *common, "references.diffusion.images_per_subcategory=2"))
    assert counts == [1, 1, 1] * 2  # 3 classes: their first image, later only their second
    firsts = [i for i, m in enumerate(two.meta) if m["seed"] in {n["seed"] for n in one.meta}]
    assert torch.equal(two.features[firsts], one.features)  # the stored first images, reused
    # The same bank as one built at once (images are generated one by one, never batched)...
    fresh, _, _ = _bank(_cfg(tmp_path / "fresh", *common, "references.diffusion.images_per_subcategory=2"))
    assert torch.equal(fresh.features, two.features)
    # ...and asking for fewer again takes the stored first images, generating nothing.
    again, _, _ = _bank(_cfg(tmp_path, *common, "references.diffusion.images_per_subcategory=1",
                             "references.diffusion.attn_threshold=0.3"))
    assert len(counts) == 6 + 6 and len(again) == 3  # the fresh build's 6, nothing more


def test_same_seed_same_bank_other_seed_other_bank(tmp_path: Path):
    a, _, _ = _bank(_cfg(tmp_path / "a"))
    b, _, _ = _bank(_cfg(tmp_path / "b"))
    c, _, _ = _bank(_cfg(tmp_path / "c", "references.diffusion.seed=7"))
    assert torch.equal(a.features, b.features) and a.meta == b.meta
    assert not torch.equal(a.features, c.features)


def test_degenerate_maps_are_dropped_counted_and_reported(tmp_path: Path, capsys):
    # At tau = 0.999 a normalized map keeps a few pixels: below 1% of the image, every map is degenerate.
    cfg = _cfg(tmp_path, "references.diffusion.attn_threshold=0.999", "references.diffusion.min_attention_area=0.01")
    with pytest.raises(DataError, match="the reference bank is empty .* lower references.diffusion.attn_threshold"):
        _bank(cfg)
    (report_file,) = (tmp_path / "cache" / "banks").glob("*.partial/references.json")
    report = json.loads(report_file.read_text())
    assert report == {"background": {"kept": 0, "dropped": 6}, "sun": {"kept": 0, "dropped": 4},
                      "leaf": {"kept": 0, "dropped": 4}}
    err = capsys.readouterr().err
    assert "sun: dropped 4 of 4 references" in err and "leaf: dropped 4 of 4" in err


def test_attention_masks_without_sam(tmp_path: Path):
    cfg = _cfg(tmp_path, "references.diffusion.mask=attention", "references.diffusion.sam.model_type=nope")
    bank, _, _ = _bank(cfg)
    assert all(m["mask_area"] == m["attention_area"] for m in bank.meta)


def test_mixed_sources(tmp_path: Path, smoke_root: Path):
    cfg = _cfg(tmp_path, "references.name=mixed", f"references.exemplars.root={smoke_root / 'exemplars'}",
               "references.exemplars.n_subcategories=1", "references.exemplars.images_per_subcategory=1")
    bank, _, _ = _bank(cfg)
    sources = [bool(m.get("prompt")) for m in bank.meta]
    assert sources.count(False) == 3 and sources.count(True) >= 1  # one exemplar per class, plus generated
    assert len(set(bank.subcategory_names)) == len(bank.subcategory_names)


def test_class_missing_from_the_subcategory_list(tmp_path: Path):
    with pytest.raises(DataError, match=r"class 'moon' has no subcategory list; add 'moon: \[moon, \.\.\.\]'"):
        _bank(_cfg(tmp_path), classes=CLASSES + [["moon"]])


def test_empty_vocabulary(tmp_path: Path):
    with pytest.raises(DataError, match="the vocabulary is empty"):
        _bank(_cfg(tmp_path), classes=[])


def test_missing_sam_checkpoint(tmp_path: Path):
    cfg = _cfg(tmp_path, "references.diffusion.sam.model_type=vit_b",
               f"references.diffusion.sam.checkpoint={tmp_path / 'sam_vit_b.pth'}")
    with pytest.raises(ConfigError, match=r"references\.diffusion\.sam\.checkpoint: SAM checkpoint '.*sam_vit_b.pth' "
                                          r"not found"):
        _bank(cfg)


def test_missing_local_stable_diffusion(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"references\.diffusion\.model: no directory"):
        _bank(_cfg(tmp_path, f"references.diffusion.model={tmp_path / 'sd15'}"))


def test_rim_bench_test_uses_the_diffusion_bank(tmp_path: Path):
    from rim_bench.commands.cli import main

    subs = tmp_path / "subs.yaml"
    subs.write_text(SUBCATEGORIES + "sea: [sea]\nberry: [berry]\ngrape: [grape]\n")
    out = tmp_path / "out"
    assert main(["test", "experiment=smoke", "data.max_images=2", f"output_dir={out}", "references.name=diffusion",
                 "references.diffusion.model=tiny", f"references.diffusion.subcategories={subs}",
                 "references.diffusion.image_size=64", "references.diffusion.num_inference_steps=2",
                 "references.diffusion.mask=attention", f"cache_dir={tmp_path / 'cache'}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and metrics["bank"]["num_references"] > 0


@pytest.mark.parametrize("sources", ["[]", "[mixed, exemplars]", "[exemplars, nosuch]"])
def test_mixed_is_a_registered_source_whose_parts_the_registry_builds(sources: str):
    """`mixed` declares its `sources` as parts (`PARTS`): the registry builds each from its own block,
    and refuses an empty list, itself, or a name that is no source, in one line."""
    from rim_bench.core.config import load_config, resolve
    from rim_bench.stages.references.sources import MixedReferences, build_references

    good = resolve(load_config(["experiment=rim_voc21", "references.name=mixed", "references.exemplars.root=/x"]))
    source = build_references(good.references)
    assert isinstance(source, MixedReferences)
    assert [type(s).__name__ for s in source.sources] == ["DiffusionReferences", "ExemplarReferences"]
    bad = resolve(load_config(["experiment=rim_voc21", "references.name=mixed", "references.exemplars.root=/x",
                               f"references.mixed.sources={sources}"]))
    with pytest.raises(ConfigError, match=r"references\.(mixed\.sources: give one or more of|name: unknown)"):
        build_references(bad.references)
