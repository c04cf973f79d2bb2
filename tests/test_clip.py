"""The CLIP baselines: MaskCLIP dense features, text references, the grid proposer, and
`compare` with them on the smoke benchmark (tiny random CLIP; no weights can be downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rim_bench.commands.cli import main
from rim_bench.core.types import BuildContext
from rim_bench.stages.backbones.clip import dense_clip_tokens, load_clip
from rim_bench.stages.features.clip_dense import ClipDenseFeaturizer
from rim_bench.stages.proposals.grid import GridProposer
from rim_bench.stages.references.clip_text import ClipTextReferences

TINY = dict(seed=0, projection_dim=16, image_size=64, patch_size=8, hidden_size=32, intermediate_size=37,
            num_attention_heads=4, num_hidden_layers=2)


def _featurizer(**kwargs) -> ClipDenseFeaturizer:
    return ClipDenseFeaturizer(**{"model": "tiny", "input_size": 48, "attention": "value", "residual": True,
                                  "tiny": TINY, **kwargs})


def test_maskclip_tokens_equal_clip_with_its_last_attention_replaced_by_the_value_path():
    clip = load_clip("tiny", TINY)
    pixels = torch.randn(1, 3, 48, 80)
    ours = dense_clip_tokens(clip, pixels, "value", residual=True)
    # Independent path: transformers' own forward, with the last block's attention made the identity
    # on values (MaskCLIP), then CLIP's post-norm and projection applied to every patch token.
    attn = clip.model.vision_model.encoder.layers[-1].self_attn
    attn.forward = lambda hidden_states, *args, **kwargs: (attn.out_proj(attn.v_proj(hidden_states)), None)
    hidden = clip.model.vision_model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
    expected = clip.model.visual_projection(clip.model.vision_model.post_layernorm(hidden[0, 1:]))
    assert ours.shape == (6 * 10, 16)
    torch.testing.assert_close(ours, expected)
    for attention, residual in (("value", False), ("vv", True)):
        other = dense_clip_tokens(clip, pixels, attention, residual)
        assert other.shape == ours.shape and torch.isfinite(other).all() and not torch.allclose(other, ours)


def test_clip_featurizer_keeps_the_aspect_ratio_and_rejects_bad_settings():
    feats = _featurizer()(torch.randint(0, 256, (3, 60, 120), dtype=torch.uint8))
    assert feats.shape == (16, 6, 12)
    with pytest.raises(Exception, match="attention"):  # through a config the declaration refuses it (test_params)
        _featurizer(attention="qk")(torch.randint(0, 256, (3, 60, 120), dtype=torch.uint8))


def test_text_references_are_the_prompt_ensemble_of_every_name():
    featurizer = _featurizer()
    classes = [["cat", "kitty"], ["dog", "dog"]]  # a repeated synonym counts once
    ctx = BuildContext(featurizer, None, classes, torch.device("cpu"), Path("."))
    templates = ["a photo of a {}.", "art of the {}."]
    bank = ClipTextReferences(templates, synonyms=True).build(ctx)
    assert bank.class_ids.tolist() == [0, 0, 1] and bank.subcategory_names == ["cat/cat", "cat/kitty", "dog/dog"]
    # CLIPModel's own forward gives the unit text embeddings; the reference is their renormalized mean.
    clip = featurizer.clip
    tokens = clip.tokenizer([t.format("kitty") for t in templates], padding=True, return_tensors="pt")
    out = clip.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                     pixel_values=torch.zeros(1, 3, 64, 64))
    torch.testing.assert_close(bank.features[1], F.normalize(out.text_embeds.mean(0), dim=0))
    assert len(ClipTextReferences(templates, synonyms=False).build(ctx)) == 2


def test_text_references_need_a_clip_featurizer_and_templates_with_a_slot(tmp_path: Path, capsys):
    assert main(["test", "experiment=smoke", "references.name=clip_text", "data.max_images=1",
                 f"output_dir={tmp_path}"]) != 0
    assert "needs a CLIP featurizer (featurizer.name=clip)" in capsys.readouterr().err
    with pytest.raises(Exception, match="exactly one"):
        ClipTextReferences(["a photo"], synonyms=True)
    with pytest.raises(Exception, match="empty"):
        ClipTextReferences([], synonyms=True)


def test_grid_cells_tile_the_image_and_pool_like_their_masks():
    region_map = GridProposer(cell_size=16)(torch.zeros(3, 40, 50, dtype=torch.uint8))
    assert region_map.shape == (40, 50) and region_map.dtype == torch.int64
    assert sorted(region_map.unique().tolist()) == list(range(3 * 4))  # every cell, numbered row-major
    assert (region_map[:16, :16] == 0).all() and (region_map[32:, 48:] == 11).all() and (region_map == 11).sum() == 16

    # Pooling a region map (sparse area weights, O(H W)) equals pooling its masks (dense area
    # interpolation), also with chunked masks, sides that do not divide, -1 and unused ids.
    from rim_bench.stages.features import pooling

    g = torch.Generator().manual_seed(0)
    for maps, grid in ((region_map, (5, 6)), (torch.randint(-1, 9, (37, 53), generator=g), (7, 9))):
        maps = torch.where(maps == 3, 7, maps)  # id 3 unused: a zero row
        features = torch.randn(8, *grid, generator=g)
        masks = maps[None] == torch.arange(int(maps.max()) + 1)[:, None, None]
        expected = pooling.masked_average_pool(masks, features)
        torch.testing.assert_close(pooling.masked_average_pool(maps, features), expected)
        pooling.MAX_MASK_ELEMENTS, saved = maps.numel() * 5, pooling.MAX_MASK_ELEMENTS  # chunks of 5 masks
        try:
            torch.testing.assert_close(pooling.masked_average_pool(masks, features), expected)
        finally:
            pooling.MAX_MASK_ELEMENTS = saved


def test_compare_runs_the_clip_baselines_next_to_rim(tmp_path: Path):
    out = tmp_path / "cmp"
    assert main(["compare", "experiment=smoke", "methods=[cosine,clip_text,clip_dense]", "data.max_images=2",
                 f"output_dir={out}"]) == 0
    measured = json.loads((out / "compare.json").read_text())["measured"]
    assert [r["method"] for r in measured] == ["cosine", "clip_text", "clip_dense"]
    assert all(0.0 <= r["mIoU"] <= 100.0 for r in measured)
    dense = (out / "clip_dense" / "config.yaml").read_text()
    assert "name: grid" in dense and "name: clip_text" in dense


def test_clip_from_a_local_directory(tmp_path: Path):
    tiny = load_clip("tiny", TINY)
    tiny.model.save_pretrained(tmp_path / "clip")
    tiny.tokenizer.save_pretrained(tmp_path / "clip")
    loaded = _featurizer(model=str(tmp_path / "clip"))
    image = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    torch.testing.assert_close(loaded(image), _featurizer()(image))
    torch.testing.assert_close(loaded.encode_text(["a cat"]), _featurizer().encode_text(["a cat"]))
