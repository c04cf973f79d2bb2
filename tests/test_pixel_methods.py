"""The per-pixel peer methods' formulas, on cases small enough to compute by hand: each last
block, NACLIP's neighbourhood term, softmax over names then max per class, SCLIP's area rule,
the probability threshold, the windows and their average at the borders, PAMR, the text side
and its cache, the settings read from the peers' configs."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from rim_bench.core.errors import ConfigError, DataError
from rim_bench.data.peer_pixels import rescaled_size as resized_size
from rim_bench.stages.backbones.openai_clip import (
    Architecture,
    Block,
    BpeTokenizer,
    OpenAIClip,
    load_openai_clip,
    random_state_dict,
)
from rim_bench.stages.pixel import clearclip, maskclip, naclip, sclip, text
from rim_bench.stages.pixel.decide import class_probabilities, label_map, suppress_small_areas
from rim_bench.stages.pixel.pamr import pamr
from rim_bench.stages.pixel.protocol import load_settings
from rim_bench.stages.pixel.segment import PixelSegmenter
from rim_bench.stages.pixel.windows import patch_padding, slide, window_boxes

WIDTH = 64
BENCHMARKS = ["voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff171", "ade20k", "cityscapes"]


def _block(zero_q: bool = False, zero_k: bool = False) -> Block:
    """A random block; q's (or k's) projection zeroed so that its attention is uniform."""
    torch.manual_seed(0)
    block = Block(WIDTH, 1)
    with torch.no_grad():
        block.attn.in_proj_weight.normal_(0, WIDTH**-0.5)
        block.attn.in_proj_bias.normal_(0, 0.1)
        if zero_q:
            block.attn.in_proj_weight[:WIDTH] = 0
            block.attn.in_proj_bias[:WIDTH] = 0
        if zero_k:
            block.attn.in_proj_weight[WIDTH:2 * WIDTH] = 0
            block.attn.in_proj_bias[WIDTH:2 * WIDTH] = 0
    return block


def _value(block: Block, x: torch.Tensor) -> torch.Tensor:
    return F.linear(block.ln_1(x), block.attn.in_proj_weight[2 * WIDTH:], block.attn.in_proj_bias[2 * WIDTH:])


X = torch.randn(1, 5, WIDTH, generator=torch.Generator().manual_seed(1))  # class token + a 2x2 grid


def test_maskclip_is_each_tokens_own_value_projected():
    block = _block()
    expected = block.attn.out_proj(_value(block, X))
    assert torch.allclose(maskclip.last_block(block, X, (2, 2)), expected, atol=1e-6)


def test_clearclip_is_q_q_attention_without_residual_or_mlp():
    block = _block(zero_q=True)  # q = 0: softmax(q qᵀ) is uniform; k plays no part
    expected = block.attn.out_proj(_value(block, X).mean(1, keepdim=True)).expand(1, 5, WIDTH)
    assert torch.allclose(clearclip.last_block(block, X, (2, 2)), expected, atol=1e-6)


def test_sclip_sums_the_q_q_and_k_k_softmaxes_and_keeps_residual_and_mlp():
    block = _block(zero_q=True, zero_k=True)  # both softmaxes uniform: twice the mean value
    x = X + block.attn.out_proj(2 * _value(block, X).mean(1, keepdim=True))
    expected = x + block.mlp(block.ln_2(x))
    assert torch.allclose(sclip.last_block(block, X, (2, 2)), expected, atol=1e-5)


def test_naclip_neighbourhood_term_is_a_gaussian_of_the_grid_distance():
    omega = naclip.neighbourhood((2, 2), std=1.0)
    side, diagonal = math.exp(-1 / 2), math.exp(-1)  # exp(-d² / 2σ²) at d² = 1 and 2
    assert torch.allclose(omega[1:, 1:], torch.tensor([[1, side, side, diagonal], [side, 1, diagonal, side],
                                                       [side, diagonal, 1, side], [diagonal, side, side, 1]]))
    assert omega[0].abs().sum() == 0 and omega[:, 0].abs().sum() == 0  # nothing for the class token
    assert math.isclose(naclip.neighbourhood((1, 6))[1, 6].item(), math.exp(-25 / 50), rel_tol=1e-6)  # σ = 5


def test_naclip_is_softmax_of_k_k_plus_the_neighbourhood_without_residual_or_mlp():
    block = _block(zero_k=True)  # k = 0: the attention is softmax(Ω) alone
    attn = naclip.neighbourhood((2, 2)).softmax(-1)
    expected = block.attn.out_proj(attn @ _value(block, X)[0])[None]
    assert torch.allclose(naclip.last_block(block, X, (2, 2)), expected, atol=1e-6)


def test_softmax_is_over_all_names_then_max_per_class():
    logits = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)  # class 0: name 0; class 1: names 1 and 2
    probs = class_probabilities(logits, torch.tensor([0, 1, 1]), 2, logit_scale=1.0)
    e = math.e
    # pooled first (max then softmax) would give e/(e+1); summed synonyms 2/(e+2)
    assert torch.allclose(probs.flatten(), torch.tensor([e / (e + 2), 1 / (e + 2)]))
    scaled = class_probabilities(logits, torch.tensor([0, 1, 1]), 2, logit_scale=2.0)
    assert math.isclose(scaled[0].item(), e**2 / (e**2 + 2), rel_tol=1e-6)


def test_area_rule_suppresses_classes_not_above_the_share_of_the_foreground():
    # 11 pixels: background best at 1, class 1 at 9, class 2 at 1: 1 of 10 foreground is not above 0.1 x 10
    probs = torch.zeros(3, 1, 11)
    probs[0, 0, 0] = 0.6
    probs[1, 0, 1:10] = 0.7
    probs[2, 0, 10] = 0.5
    probs[1, 0, 10] = 0.3  # the pixel's second best
    kept = suppress_small_areas(probs, 0.1)
    assert kept[2].abs().sum() == 0 and torch.equal(kept[:2], probs[:2])
    assert label_map(probs, area_thd=0.1)[0, 10] == 1
    assert label_map(probs)[0, 10] == 2  # without the rule
    assert label_map(probs, area_thd=0.09)[0, 10] == 2  # 1 > 0.9: kept


def test_probability_threshold_sends_unsure_pixels_to_class_0():
    probs = torch.tensor([[0.2, 0.1], [0.5, 0.3], [0.3, 0.6]]).view(3, 1, 2)
    assert label_map(probs, prob_thd=0.55).tolist() == [[0, 2]]
    assert label_map(probs).tolist() == [[1, 2]]


def test_windows_are_the_peers_grid_shifted_inside_the_image():
    boxes = window_boxes(336, 500, 224, 112)
    assert len(boxes) == 8  # 2 rows x 4 columns, as SCLIP reads a 336x500 VOC image
    assert [b[2:] for b in boxes[:4]] == [(0, 224), (112, 336), (224, 448), (276, 500)]
    assert {b[:2] for b in boxes} == {(0, 224), (112, 336)}
    assert window_boxes(336, 500, 0, 112) == [(0, 336, 0, 500)]
    assert patch_padding(5, 7, 4) == (0, 1, 1, 2)


def test_windows_run_in_one_batch_and_are_averaged_where_they_overlap():
    calls = []

    def dense(windows: torch.Tensor) -> torch.Tensor:  # each window's logit: 1 + its index in the batch
        calls.append(len(windows))
        return torch.arange(1.0, len(windows) + 1).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)

    out = slide(torch.zeros(3, 4, 6), crop=4, stride=2, dense=dense)
    assert calls == [2]  # windows (0..4) and (2..6): one forward
    assert out[0, 0].tolist() == [1, 1, 1.5, 1.5, 2, 2]
    slide(torch.zeros(3, 4, 6), crop=4, stride=2, dense=dense, chunk=1)
    assert calls[1:] == [1, 1]


def test_windows_padded_to_the_patch_are_cut_back():
    def dense(windows: torch.Tensor) -> torch.Tensor:
        assert windows.shape[-2:] == (8, 8)  # 5 x 7 padded to multiples of 4
        return windows[:, :1, ::4, ::4] * 0 + torch.tensor([[0.0, 1.0], [2.0, 3.0]])

    out = slide(torch.zeros(3, 5, 7), crop=0, stride=0, dense=dense, pad_to_patch=4)
    assert out.shape == (1, 5, 7)


def test_pamr_with_a_flat_image_averages_the_eight_neighbours():
    mask = torch.zeros(1, 1, 3, 3)
    mask[0, 0, 1, 1] = 1.0
    out = pamr(torch.ones(1, 3, 3, 3), mask, steps=1, dilations=(1,))
    # centre: its 8 neighbours are 0; every border pixel sees the centre once among 8 (edges repeated)
    assert torch.allclose(out[0, 0], torch.tensor([[1, 1, 1], [1, 0, 1], [1, 1, 1]]) / 8)


def test_pamr_does_not_cross_an_image_edge():
    image = torch.zeros(1, 3, 4, 4)
    image[..., 2:] = 10.0  # two flat halves
    image[..., 0, 0] += 0.01  # some spread in each half
    image[..., 0, 3] += 0.01
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1.0
    out = pamr(image, mask, steps=3, dilations=(1,))
    assert out[..., 2:].max() < 1e-3 and out[..., :2].min() > 0.999


def test_resize_by_the_short_side_as_mmseg_does():
    assert resized_size(375, 500, 336) == (336, 448)
    assert resized_size(336, 500, 336) == (336, 500)
    assert resized_size(100, 5000, 336) == (41, 2048)  # the long side capped at 2048
    assert resized_size(1, 5000, 336) == (1, 2048)  # mmcv's rounding gives 0: kept at one pixel


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[OpenAIClip, BpeTokenizer, Path]:
    bpe = tmp_path / "bpe.txt.gz"
    with gzip.open(bpe, "wt", encoding="utf-8") as f:
        f.write("#version: test\nc a\nca t</w>\n")
    tok = BpeTokenizer(bpe)
    arch = Architecture(width=64, layers=2, patch=16, grid=4, embed_dim=32, context=32, vocab=len(tok), text_width=64,
                        text_layers=1)
    torch.save(random_state_dict(arch, seed=7), tmp_path / "clip.pt")
    return load_openai_clip(tmp_path / "clip.pt"), tok, tmp_path / "clip.pt"


def test_text_embedding_normalizes_each_prompt_then_averages_then_normalizes(tiny):
    model, tok, _ = tiny
    templates = ["a {}.", "the big {}."]
    got = text.text_embeddings(model, tok, ["cat", "dog"], templates)
    for row, name in enumerate(["cat", "dog"]):
        each = F.normalize(model.encode_text(tok([t.format(name) for t in templates], 32)), dim=-1)
        assert torch.allclose(got[row], F.normalize(each.mean(0), dim=0), atol=1e-6)


def test_text_embeddings_are_cached_by_model_templates_and_names(tiny, tmp_path, monkeypatch):
    model, tok, _ = tiny
    first = text.cached_text_embeddings(model, tok, ["cat"], ["a {}."], "m1", tmp_path / "cache")
    monkeypatch.setattr(text, "text_embeddings", lambda *a, **k: pytest.fail("recomputed"))
    assert torch.equal(text.cached_text_embeddings(model, tok, ["cat"], ["a {}."], "m1", tmp_path / "cache"), first)
    for key in [(["dog"], ["a {}."], "m1"), (["cat"], ["the {}."], "m1"), (["cat"], ["a {}."], "m2")]:
        with pytest.raises(pytest.fail.Exception):
            text.cached_text_embeddings(model, tok, *key, tmp_path / "cache")


def test_prompts_run_cut_to_their_length_equal_the_full_context_to_1e_6(tmp_path: Path, monkeypatch, capsys):
    """Issue 27: each batch at its longest prompt's length, not CLIP's 77 positions; the same
    embeddings (the causal mask), shown with a progress bar of names x templates."""
    from rim_bench.stages.backbones.openai_clip import BPE_FILE

    tok = BpeTokenizer(BPE_FILE)
    arch = Architecture(width=64, layers=1, patch=16, grid=4, embed_dim=32, context=77, vocab=len(tok), text_width=64,
                        text_layers=3)
    model = OpenAIClip(arch)
    model.load_state_dict(random_state_dict(arch, seed=3))
    names, templates = ["cat", "potted plant", "tv monitor"], text.imagenet_templates()
    full = F.normalize(model.encode_text(tok([t.format(n) for n in names for t in templates], 77)), dim=-1)
    expected = F.normalize(full.view(3, len(templates), -1).mean(1), dim=-1)
    lengths = []
    encode = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda tokens: (lengths.append(tokens.shape[1]), encode(tokens))[1])
    got = text.text_embeddings(model, tok, names, templates, batch=50)
    assert (got - expected).abs().max() < 1e-6
    assert max(lengths) < 20 and len(lengths) == 5  # 240 prompts in batches of 50, none at 77
    assert "text embeddings (3 names x 80 templates)" in capsys.readouterr().err


def test_peers_on_one_clip_file_with_the_same_names_share_one_text_cache_entry(tmp_path: Path, monkeypatch):
    from rim_bench.stages.pixel.stage import TINY, ClipPixelMethod

    tiny = {**TINY, "seed": 0}
    vocabulary = [["background"], ["cat", "kitten"]]
    cache = tmp_path / "text"
    first = ClipPixelMethod("sclip", "tiny", tiny=tiny, text_dir=cache, logit_scale=65).for_vocabulary(vocabulary)
    monkeypatch.setattr(text, "text_embeddings", lambda *a, **k: pytest.fail("embedded again"))
    for method in ("naclip", "clearclip", "maskclip"):
        other = ClipPixelMethod(method, "tiny", tiny=tiny, text_dir=cache, pamr_steps=10).for_vocabulary(vocabulary)
        assert torch.equal(other.queries, first.queries)
    assert len(list(cache.glob("text-*.safetensors"))) == 1


def test_the_text_cache_key_changes_with_the_vocabulary_and_the_dtype(tiny):
    _, tok, _ = tiny
    base = text.text_cache_key("m", tok, ["a {}."], ["cat"])
    assert text.text_cache_key("m", BpeTokenizer(None), ["a {}."], ["cat"]) != base
    assert text.text_cache_key("m", tok, ["a {}."], ["cat"], torch.float16) != base
    assert text.text_cache_key("m", tok, ["a {}."], ["cat"], torch.float32) == base


def test_the_peers_settings_and_class_files():
    voc21 = load_settings("sclip", "voc21")
    assert (voc21.logit_scale, voc21.prob_thd, voc21.area_thd, voc21.crop, voc21.stride) == (65, 0.1, 0.1, 224, 112)
    assert load_settings("sclip", "context60").logit_scale == 50 and load_settings("sclip", "ade20k").logit_scale == 40
    na = load_settings("naclip", "voc21")
    assert (na.crop, na.pamr_steps, na.pamr_dilations, na.logit_scale, na.area_thd) == (0, 10, (8, 16), 40, None)
    assert load_settings("clearclip", "voc21").short_side == 448 and load_settings("clearclip", "voc21").prob_thd == 0.5
    names, classes = text.read_class_file(voc21.class_file, voc21.separator)
    assert max(classes) + 1 == 21 and classes.count(0) == 26 and names[0] == "sky" and classes.count(15) == 7
    names, classes = text.read_class_file(load_settings("clearclip", "voc21").class_file, ",")
    assert names[0] == "background" and len(names) == 21
    with pytest.raises(ConfigError, match="method 'nope' not found"):
        load_settings("nope", "voc21")
    with pytest.raises(ConfigError, match="experiment 'nope' not found"):
        load_settings("sclip", "nope")
    with pytest.raises(ConfigError, match="'rim' is not a per-pixel method"):
        load_settings("rim", "voc21")


@pytest.mark.parametrize("method", ["maskclip", "sclip", "naclip", "clearclip"])
def test_each_method_labels_every_pixel_of_an_image_of_any_size(tiny, method):
    model, tok, _ = tiny
    settings = load_settings(method, "voc21", short_side=64, crop=48, stride=24, pamr_steps=1)
    seg = PixelSegmenter(model, tok, settings, "tiny", names=["cat", "dog", "cot"], query_class=[0, 1, 1])
    labels = seg(torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8))
    assert labels.shape == (70, 90) and labels.dtype == torch.long and labels.max() <= 1


@pytest.mark.parametrize("method", ["maskclip", "sclip", "naclip", "clearclip"])
def test_tiny_and_extreme_images_go_through_every_peer(tiny, method):
    """Issue 27: a 17 x 9000 image is 4 x 2048 at short side 336, under one patch high: the peers'
    convolution failed mid-batch; its windows are padded to a patch. A 1 x 5000 image rounds to
    0 x 2048: kept at one pixel. Each peer's own benchmark settings (NACLIP's whole image and PAMR)."""
    model, tok, _ = tiny
    settings = load_settings(method, "voc21")
    seg = PixelSegmenter(model, tok, settings, "tiny", names=["cat", "dog", "cot"], query_class=[0, 1, 1])
    for size in [(17, 9000), (1, 1), (9000, 17), (1, 5000)]:
        labels = seg(torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
        assert labels.shape == size and labels.min() >= 0 and labels.max() <= 1, (method, size)


def test_a_window_under_one_patch_is_padded_to_it_and_cut_back():
    seen = []

    def dense(windows: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(windows.shape[-2:]))
        return windows[:, :1, ::16, ::16]  # one "patch" logit per 16 x 16, as a ViT/16 gives

    image = torch.ones(3, 4, 40)
    out = slide(image, 224, 112, dense, pad_to_patch=0, min_side=16)
    assert seen == [(16, 40)] and out.shape == (1, 4, 40)
    assert slide(torch.ones(3, 20, 40), 224, 112, dense, min_side=16).shape == (1, 20, 40) and seen[-1] == (20, 40)


@pytest.mark.parametrize("method", ["maskclip", "sclip", "naclip", "clearclip", "proxyclip"])
def test_every_benchmark_has_settings_and_a_class_file_with_its_class_count(method):
    data_classes = Path(text.__file__).parents[2] / "data" / "classes"
    for benchmark in BENCHMARKS:
        settings = load_settings(method, benchmark)
        _, classes = text.read_class_file(settings.class_file, settings.separator)
        ours = [line for line in (data_classes / f"{benchmark}.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
        assert max(classes) + 1 == len(ours), (method, benchmark)
        assert settings.source.startswith("configs/cfg_")


def test_class_files_are_read_as_the_peers_read_them(tmp_path: Path):
    path = tmp_path / "cls.txt"
    path.write_text("sky, wall\ncat\ndog, puppy dog \n")  # the final newline ends the last line
    assert text.read_class_file(path, ", ") == (["sky", "wall", "cat", "dog", "puppy dog "], [0, 0, 1, 2, 2])
    path.write_text("sky\n\ncat")
    with pytest.raises(DataError, match="line 2 is empty"):
        text.read_class_file(path, ", ")


@pytest.mark.parametrize(("content", "separator", "message"), [
    ("", ", ", r"class file '.*cls\.txt' is empty \(one class a line\)"),
    ("sky\n,,,\ncat", ",", r"cls\.txt': line 2 \(',,,'\) gives the name '', which has no letter or digit"),
    ("sky\n,,,\ncat", ", ", r"cls\.txt': line 2 \(',,,'\) gives the name ',,,', which has no letter or digit"),
    ("sky, , cat", ", ", r"line 1 \('sky, , cat'\) gives the name '', which"),
])
def test_an_empty_or_degenerate_class_file_is_one_line_naming_the_file_and_line(tmp_path: Path, content, separator,
                                                                               message):
    """Issue 27: an empty class file gave a traceback, a line ',,,' four empty query names."""
    path = tmp_path / "cls.txt"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as e:
        text.read_class_file(path, separator)
    assert "\n" not in str(e.value)


def test_a_class_file_that_is_not_utf8_is_one_line_naming_its_line(tmp_path: Path):
    from rim_bench.core.errors import DataError
    from rim_bench.stages.pixel.text import read_class_file

    path = tmp_path / "classes.txt"
    path.write_bytes("background\ncaf\xe9, cafe\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{path}:2: not UTF-8 text \(byte 0xe9\)"):
        read_class_file(path, ", ")


@pytest.mark.parametrize(("device", "precision", "dtype"), [
    ("cuda", None, torch.float16), ("cpu", None, torch.float32), ("mps", None, torch.float32),
    ("cuda", "32-true", torch.float32), ("cuda", "16-mixed", torch.float16), ("cpu", "16-true", torch.float16),
    ("cuda", "bf16-mixed", torch.bfloat16), ("cuda", 32, torch.float32), ("cpu", "64-true", torch.float64),
])
def test_a_peer_runs_in_half_on_cuda_unless_trainer_precision_says_otherwise(device, precision, dtype):
    from rim_bench.stages.pixel.segment import run_dtype

    assert run_dtype(device, precision) == dtype


def test_a_precision_without_a_dtype_is_one_line():
    from rim_bench.stages.pixel.segment import run_dtype

    with pytest.raises(ConfigError, match=r"trainer.precision: 'transformer-engine' has no dtype for a peer method"):
        run_dtype("cuda", "transformer-engine")


def test_half_precision_casts_what_clips_convert_weights_casts(tiny):
    """OpenAI's clip.load on CUDA: convolution, linear layers, in_proj, proj and text_projection in
    float16; LayerNorms (computed in float32), embeddings and the logit scale stay float32."""
    from rim_bench.stages.backbones.openai_clip import to_half

    model, _, _ = tiny
    to_half(model)
    half = {name for name, p in model.named_parameters() if p.dtype == torch.float16}
    assert "visual.conv1.weight" in half and "visual.proj" in half and "text_projection" in half
    assert {"visual.transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.mlp.c_fc.bias"} <= half
    kept = {name for name, p in model.named_parameters() if p.dtype == torch.float32}
    assert all(".ln_" in n or n.startswith(("ln_", "visual.ln_")) or "embedding" in n or n == "logit_scale"
               for n in kept)
    assert {"visual.class_embedding", "positional_embedding", "token_embedding.weight", "ln_final.weight"} <= kept
    assert model.dtype == torch.float16


@pytest.mark.parametrize("method", ["maskclip", "sclip", "naclip", "clearclip"])
def test_a_peer_in_float16_runs_and_says_so(method):
    """Explicit 16-true on a CPU: the model, the text embeddings and the result in float16 (ClearCLIP's
    whole image cast, SCLIP's and NACLIP's windows summed in float32), nearly the float32 labels."""
    from rim_bench.stages.pixel.stage import TINY, ClipPixelMethod

    image = torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    vocabulary = [["background"], ["cat"], ["dog"]]
    kwargs = dict(tiny={**TINY, "seed": 0}, short_side=64, crop=48, stride=24, pamr_steps=2)
    full = ClipPixelMethod(method, "tiny", **kwargs).for_vocabulary(vocabulary)
    half = ClipPixelMethod(method, "tiny", precision="16-true", **kwargs).for_vocabulary(vocabulary)
    assert full.resolved_settings() == {"pixel.clip.dtype": "float32"}
    assert half.resolved_settings() == {"pixel.clip.dtype": "float16"} and half.queries.dtype == torch.float16
    assert half.logits(image).dtype == torch.float16
    assert (half(image) == full(image)).float().mean() > 0.95


@pytest.mark.gpu
def test_on_cuda_a_peer_runs_in_float16_by_default_and_in_float32_when_asked():
    from rim_bench.stages.pixel.stage import TINY, ClipPixelMethod

    image = torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    vocabulary = [["background"], ["cat"], ["dog"]]
    labels = {}
    for precision in (None, "32-true"):
        method = ClipPixelMethod("sclip", "tiny", tiny={**TINY, "seed": 0}, precision=precision)
        method.model.cuda()
        seg = method.for_vocabulary(vocabulary)
        expected = torch.float16 if precision is None else torch.float32
        assert seg.model.dtype == expected and seg.queries.dtype == expected and seg.queries.is_cuda
        labels[precision] = seg(image.cuda()).cpu()
    assert (labels[None] == labels["32-true"]).float().mean() > 0.95
