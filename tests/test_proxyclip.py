"""ProxyCLIP (method=proxyclip): its proxy attention on cases small enough to compute by hand, our
DINO ViT, its settings, and its label maps pinned to numbers recorded from its own code on the same
random weights (tests/data/proxyclip_from_its_code.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from rim_bench.core.errors import ConfigError
from rim_bench.stages.backbones.dino import DinoArch, DinoViT, load_dino, random_state_dict
from rim_bench.stages.backbones.openai_clip import Architecture, Block, BpeTokenizer, OpenAIClip
from rim_bench.stages.backbones.openai_clip import random_state_dict as random_clip
from rim_bench.stages.pixel import proxyclip
from rim_bench.stages.pixel.decide import class_probabilities, label_map
from rim_bench.stages.pixel.protocol import load_settings
from rim_bench.stages.pixel.segment import PixelSegmenter, normalize

EXPECTED = Path(__file__).with_name("data") / "proxyclip_from_its_code.json"
DINO_TINY = {"width": 128, "layers": 2, "patch": 8, "grid": 8, "seed": 0}
NAMES, QUERY_CLASS = ["sky", "wall", "cat", "kitten", "dog"], [0, 0, 1, 1, 2]


def one_hot_features(rows: int, cols: int) -> torch.Tensor:
    """Proxy features (1, rows·cols, rows, cols): each patch its own direction."""
    return torch.eye(rows * cols).reshape(1, rows * cols, rows, cols)


def test_proxy_attention_keeps_scores_above_beta_times_the_mean_cosine():
    # patches 0 and 1 alike, 2 apart: cosines [[1, 1, 0], [1, 1, 0], [0, 0, 1]], mean 5/9
    features = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).reshape(1, 2, 1, 3)
    attn = proxyclip.proxy_attention(features, beta=1.2, gamma=3.0)
    # (cos − 1.2·5/9)·3 = 1 for cos 1, −2 (masked) for cos 0
    assert torch.allclose(attn[0], torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    # beta 0: nothing masked, softmax of 3·cos
    soft = proxyclip.proxy_attention(features, beta=0.0, gamma=3.0)[0, 2]
    e3 = math.exp(3)
    assert torch.allclose(soft, torch.tensor([1 / (2 + e3), 1 / (2 + e3), e3 / (2 + e3)]))


def test_a_patch_whose_every_score_is_masked_attends_to_itself():
    features = torch.ones(2, 4, 2, 2)  # all alike: (1 − 1.2)·3 < 0 everywhere (their code: NaN)
    assert torch.equal(proxyclip.proxy_attention(features), torch.eye(4).expand(2, 4, 4))


def test_the_mean_is_each_windows_own():
    features = torch.cat([one_hot_features(2, 2), torch.ones(1, 4, 2, 2)])
    attn = proxyclip.proxy_attention(features)
    assert torch.equal(attn, torch.eye(4).expand(2, 4, 4))  # a batch-wide mean would unmask the first window


def test_last_block_is_out_proj_of_attended_clip_values_on_the_proxy_grid():
    torch.manual_seed(0)
    block = Block(64, 1)
    with torch.no_grad():
        block.attn.in_proj_weight.normal_(0, 64**-0.5)
        block.attn.in_proj_bias.normal_(0, 0.1)
    x = torch.randn(1, 5, 64)  # class token + a 2x2 CLIP grid
    v = F.linear(block.ln_1(x), block.attn.in_proj_weight[128:], block.attn.in_proj_bias[128:])[0, 1:]
    # one-hot proxy features on the same grid: identity attention, each patch its own value
    same = proxyclip.last_block(block, x, (2, 2), one_hot_features(2, 2))
    assert torch.allclose(same[0], block.attn.out_proj(v), atol=1e-6)
    # a 4x4 proxy grid: the values resized bilinearly from 2x2 (corner patches keep theirs)
    fine = proxyclip.last_block(block, x, (2, 2), one_hot_features(4, 4))[0].reshape(4, 4, 64)
    assert torch.allclose(fine[0, 0], block.attn.out_proj(v[0]), atol=1e-6)
    assert torch.allclose(fine[3, 3], block.attn.out_proj(v[3]), atol=1e-6)
    between = 0.75 * v[0] + 0.25 * v[1]  # output column 1 of 4 samples 0.25 of the way from column 0 to 1
    assert torch.allclose(fine[0, 1], block.attn.out_proj(between), atol=1e-5)


def test_the_proxy_sees_the_window_in_imagenet_statistics():
    pixels = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1).expand(3, 3, 1)
    got = proxyclip.imagenet_input(normalize(pixels)[None])[0]
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    # CLIP's statistics on 0..255 (rim-bench's normalize) and on 0..1 (its UnNormalize) differ by ~1e-6
    assert torch.allclose(got, (pixels.float() / 255 - mean) / std, atol=1e-4)


def test_dino_reads_its_own_checkpoint_and_a_transformers_folder(tmp_path: Path):
    from safetensors.torch import save_file

    net = load_dino("tiny", DINO_TINY)
    state = net.state_dict()
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}}, tmp_path / "checkpoint.pth")
    hf = {"embeddings.cls_token": state["cls_token"], "embeddings.position_embeddings": state["pos_embed"],
          "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
          "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
          "layernorm.weight": state["norm.weight"], "layernorm.bias": state["norm.bias"]}
    for i in range(2):
        b, o = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = state[f"{b}attn.qkv.{kind}"].chunk(3)
            hf |= {f"{o}attention.attention.query.{kind}": q, f"{o}attention.attention.key.{kind}": k,
                   f"{o}attention.attention.value.{kind}": v,
                   f"{o}attention.output.dense.{kind}": state[f"{b}attn.proj.{kind}"],
                   f"{o}layernorm_before.{kind}": state[f"{b}norm1.{kind}"],
                   f"{o}layernorm_after.{kind}": state[f"{b}norm2.{kind}"],
                   f"{o}intermediate.dense.{kind}": state[f"{b}mlp.fc1.{kind}"],
                   f"{o}output.dense.{kind}": state[f"{b}mlp.fc2.{kind}"]}
    (tmp_path / "hf").mkdir()
    save_file({k: v.contiguous() for k, v in hf.items()}, tmp_path / "hf" / "model.safetensors")
    image = torch.randn(1, 3, 40, 56)
    for source in (tmp_path / "checkpoint.pth", tmp_path / "hf"):
        loaded = load_dino(str(source), {})
        assert loaded.arch == net.arch and torch.allclose(loaded(image), net(image))
    assert net(image).shape == (1, 128, 5, 7)
    with pytest.raises(ConfigError, match="pixel.clip.proxy_model: no file or folder 'nope.pth'"):
        load_dino("nope.pth", {})
    torch.save({**state, "blocks.0.attn.proj.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(ConfigError, match="wrong.pth' is not a DINO ViT state dict .*size mismatch"):
        load_dino(str(tmp_path / "wrong.pth"), {})
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="other.pth' holds no DINO ViT weights"):
        load_dino(str(tmp_path / "other.pth"), {})


def test_proxyclip_settings_per_benchmark():
    voc21 = load_settings("proxyclip", "voc21")
    windows = (voc21.crop, voc21.stride, voc21.pad_multiple, voc21.short_side)
    assert windows == (336, 112, 56, 336) and voc21.logit_scale == 40
    assert (voc21.proxy, voc21.beta, voc21.gamma, voc21.prob_thd, voc21.separator) == ("dino", 1.2, 3.0, 0.2, "; ")
    thresholds = {b: load_settings("proxyclip", b).prob_thd for b in ("context60", "coco_object", "voc20", "ade20k")}
    assert thresholds == {"context60": 0.15, "coco_object": 0.25, "voc20": 0.0, "ade20k": 0.0}
    assert load_settings("proxyclip", "ade20k").short_side == 448
    city = load_settings("proxyclip", "cityscapes")
    assert (city.short_side, city.crop, city.stride) == (448, 224, 112)


def tiny_clip() -> tuple[OpenAIClip, BpeTokenizer]:
    tok = BpeTokenizer(None)
    arch = Architecture(width=64, layers=2, patch=16, grid=14, embed_dim=32, context=77, vocab=len(tok),
                        text_width=64, text_layers=1)
    model = OpenAIClip(arch)
    model.load_state_dict(random_clip(arch, seed=0))
    return model.eval(), tok


def structured_image(height: int, width: int, seed: int) -> torch.Tensor:
    """uint8 (3, height, width): smooth random colour blobs plus texture."""
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(1, 3, 4, 6, generator=g) * 255, size=(height, width), mode="bicubic",
                           align_corners=False)[0]
    return (smooth + 12 * torch.randn(3, height, width, generator=g)).clamp(0, 255).round().to(torch.uint8)


def pinned_segmenter(kind: str = "dino") -> PixelSegmenter:
    """The case recorded from ProxyCLIP's code: an image at the short side already (no resize),
    windows 100 padded to 112, stride 56, the VOC21 rule (prob_thd 0.2)."""
    model, tok = tiny_clip()
    settings = load_settings("proxyclip", "voc21", short_side=112, crop=100, stride=56)
    proxy = proxyclip.load_proxy(kind, "tiny", DINO_TINY)  # type: ignore[arg-type]
    return PixelSegmenter(model, tok, settings, "tiny", names=NAMES, query_class=QUERY_CLASS, proxy=proxy)


def test_labels_equal_those_recorded_from_proxyclips_own_code():
    expected = json.loads(EXPECTED.read_text())
    seg = pinned_segmenter()
    image = structured_image(*expected["image"])
    probs = class_probabilities(seg.logits(image), seg.query_class, seg.num_classes, seg.settings.logit_scale)
    labels = label_map(probs, seg.settings.prob_thd)
    assert "".join(map(str, labels.flatten().tolist())) == expected["labels"]
    for (y, x), values in zip(expected["pixels"], expected["probs"]):
        assert torch.allclose(probs[:, y, x], torch.tensor(values), atol=1e-5), (y, x)


@pytest.mark.parametrize("kind", ["dino", "dinov2", "sam"])
def test_every_proxy_labels_every_pixel(kind: str):
    seg = pinned_segmenter(kind)
    labels = seg(structured_image(70, 90, 1))
    assert labels.shape == (70, 90) and labels.max() <= 2


def test_proxyclip_needs_a_proxy_and_the_others_take_none():
    model, tok = tiny_clip()
    with pytest.raises(ConfigError, match="proxyclip needs proxy model"):
        PixelSegmenter(model, tok, load_settings("proxyclip", "voc21"), "tiny", names=["a"], query_class=[0])
    proxy = proxyclip.load_proxy("dino", "tiny", DINO_TINY)
    with pytest.raises(ConfigError, match="sclip takes no proxy model"):
        PixelSegmenter(model, tok, load_settings("sclip", "voc21"), "tiny", names=["a"], query_class=[0], proxy=proxy)


def test_random_dino_weights_do_not_depend_on_torchs_initializers():
    arch = DinoArch(width=64, layers=1, patch=8, grid=4, mlp=128)
    torch.manual_seed(1)
    first = random_state_dict(arch, seed=3)
    torch.manual_seed(2)
    assert all(torch.equal(first[k], v) for k, v in random_state_dict(arch, seed=3).items())
    assert set(first) == set(DinoViT(arch).state_dict())


def test_the_tiny_proxys_settings_stay_out_of_the_result_with_a_real_proxy():
    from rim_bench.core.config import load_config, resolve
    from rim_bench.run.methods import result_spec

    def pixel(*overrides: str) -> dict:
        return result_spec(resolve(load_config(["experiment=smoke", "method=proxyclip", *overrides])))["pixel"]

    assert "proxy_tiny" in pixel() and "proxy_tiny" not in pixel("pixel.clip.proxy_model=/dino.pth")
    assert pixel()["method"] == "proxyclip" and pixel()["proxy"] == "dino"


def test_plan_checks_the_proxys_weights(tmp_path: Path):
    from rim_bench.core.params import FileWeights, HubWeights, SamWeights
    from rim_bench.stages.pixel.stage import ClipPixelMethod

    def proxy(**params: str) -> list:
        found = ClipPixelMethod.weights({"model": "tiny", "method": "proxyclip", **params}, "pixel.clip")
        return [w for w in found if w.key == "pixel.clip.proxy_model"]

    assert proxy(proxy="dino", proxy_model="dino.pth") == [
        FileWeights("pixel.clip.proxy_model", "dino.pth",
                    "DINO's checkpoint: dino_vitbase8_pretrain.pth, github.com/facebookresearch/dino")]
    assert proxy(proxy="dino", proxy_model=str(tmp_path)) == [
        HubWeights("pixel.clip.proxy_model", str(tmp_path), "model.safetensors")]
    assert proxy(proxy="dinov2", proxy_model="facebook/dinov2-with-registers-base") == [
        HubWeights("pixel.clip.proxy_model", "facebook/dinov2-with-registers-base")]
    assert proxy(proxy="sam", proxy_model="sam_vit_b.pth") == [SamWeights("pixel.clip.proxy_model", "vit_b",
                                                                          "sam_vit_b.pth")]
    assert proxy(proxy="dino", proxy_model="tiny") == []
    assert ClipPixelMethod.weights({"model": "tiny", "method": "sclip", "proxy_model": "dino.pth"}, "pixel.clip") == []
