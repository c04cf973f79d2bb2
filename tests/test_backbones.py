"""The real loading paths (a local model directory through `from_pretrained`), exercised with
tiny random models saved to disk, since no weights can be downloaded here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rim_bench.stages.features.dense import DinoV2Featurizer


def test_dinov2_with_registers_from_a_local_directory(tmp_path: Path):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=8,
        image_size=64, num_register_tokens=4,
    ))
    model.save_pretrained(tmp_path / "dinov2-reg")
    featurizer = DinoV2Featurizer(str(tmp_path / "dinov2-reg"), input_size=64, tiny={})
    assert featurizer.num_prefix == 5  # CLS + 4 registers are not patches
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 64, 96), dtype=np.uint8))
    feats = featurizer(image)
    assert feats.shape == (32, 8, 12)
    # The patch tokens, and nothing else, fill the map.
    x = torch.nn.functional.interpolate(image[None].float() / 255, size=(64, 96), mode="bilinear",
                                        align_corners=False, antialias=True)
    x = (x - featurizer.mean) / featurizer.std
    tokens = model.eval()(pixel_values=x).last_hidden_state[0, 5:]
    torch.testing.assert_close(feats, tokens.T.reshape(32, 8, 12))


def test_stable_diffusion_from_a_local_directory(tmp_path: Path):
    from rim_bench.stages.backbones.stable_diffusion import load_stable_diffusion
    from rim_bench.stages.references.diffusion import generate_with_attention

    tiny = load_stable_diffusion("tiny", "cpu", {"seed": 0, "sample_size": 32})
    tiny.save_pretrained(tmp_path / "sd")
    loaded = load_stable_diffusion(str(tmp_path / "sd"), "cpu", {})
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    a = generate_with_attention(tiny, "a photo of a cat", "cat", [3], 64, 2, 7.5, (16,))
    b = generate_with_attention(loaded, "a photo of a cat", "cat", [3], 64, 2, 7.5, (16,))
    assert np.abs(a[0].astype(int) - b[0].astype(int)).max() <= 1 and torch.allclose(a[1], b[1], atol=1e-4)


def test_sam_is_shared_while_in_use_and_checked_against_the_checkpoint(tmp_path: Path):
    import gc
    import weakref

    from rim_bench.core.errors import ConfigError
    from rim_bench.stages.backbones.sam import load_sam

    a = load_sam("tiny", None, 0, "cpu", key="proposer.sam")
    assert load_sam("tiny", None, 0, "cpu", key="references.diffusion.sam") is a  # the proposer's and the references'
    assert load_sam("tiny", None, 1, "cpu", key="proposer.sam") is not a
    alive = weakref.ref(a)
    del a
    gc.collect()
    assert alive() is None  # the cache does not keep a model nobody uses
    # A ViT-B checkpoint under model_type=vit_h: one line, before segment-anything's load_state_dict.
    checkpoint = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, checkpoint)
    with pytest.raises(ConfigError, match=r"^proposer\.sam\.model_type: 'vit_h' does not fit sam_vit_b_01ec64\.pth, "
                                          r"which holds a vit_b image encoder \(768 wide\); "
                                          r"set proposer\.sam\.model_type=vit_b"):
        load_sam("vit_h", str(checkpoint), 0, "cpu", key="proposer.sam")
