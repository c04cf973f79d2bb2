"""OpenAI CLIP files in transformers' CLIPModel: `load_clip` on a ``.pt`` state dict gives the
image and text embeddings of our own OpenAIClip on the same weights, with CLIP's BPE tokens."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from rim_bench.core.errors import ConfigError
from rim_bench.stages.backbones.clip import encode_text, load_clip
from rim_bench.stages.backbones.openai_clip import Architecture, BpeTokenizer, OpenAIClip, random_state_dict

MERGES = ["c a", "ca t</w>", "d o", "do g</w>"]
VOCAB = 2 * 256 + len(MERGES) + 2  # CLIP's vocabulary order over these merges
PROMPTS = ["a cat. a dog", "dog", "a cot"]


@pytest.fixture
def bpe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "bpe.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: test\n" + "\n".join(MERGES) + "\n")
    monkeypatch.setenv("RIM_BENCH_CLIP_BPE", str(path))
    return path


def checkpoint(tmp_path: Path, vocab: int) -> tuple[Path, OpenAIClip]:
    arch = Architecture(width=128, layers=2, patch=16, grid=4, embed_dim=32, context=12, vocab=vocab, text_width=64,
                        text_layers=2)
    state = random_state_dict(arch, seed=5)
    path = tmp_path / "ViT-tiny.pt"
    torch.save(state, path)
    ours = OpenAIClip(arch)
    ours.load_state_dict(state)
    return path, ours.eval()


def features(out: object) -> torch.Tensor:
    return getattr(out, "pooler_output", out)  # type: ignore[return-value]  # transformers 5 | 4


@torch.no_grad()
def test_an_openai_file_loads_as_clipmodel_with_the_same_embeddings(tmp_path: Path, bpe: Path):
    path, ours = checkpoint(tmp_path, VOCAB)
    clip = load_clip(str(path), {})
    assert clip.patch_size == 16 and clip.embed_dim == 32
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    theirs = features(clip.model.get_image_features(pixel_values=images))
    torch.testing.assert_close(theirs, ours.visual(images), atol=1e-4, rtol=1e-4)

    ids = BpeTokenizer(bpe)(PROMPTS, context=12)
    hf_ids = clip.tokenizer(PROMPTS, padding="max_length", max_length=12, return_tensors="pt")["input_ids"]
    assert (hf_ids * (ids > 0)).tolist() == ids.tolist()  # the same tokens; padding aside (ours 0, theirs eot)
    expected = F.normalize(ours.encode_text(ids), dim=-1)
    torch.testing.assert_close(encode_text(clip, PROMPTS), expected, atol=1e-4, rtol=1e-4)
    assert clip.model.logit_scale.exp().item() == pytest.approx(100.0)


def test_a_file_with_another_vocabulary_than_the_bpe_files_is_one_line(tmp_path: Path, bpe: Path):
    path, _ = checkpoint(tmp_path, VOCAB + 10)
    with pytest.raises(ConfigError, match=r"vocabulary of 528 tokens, CLIP's BPE file 518") as e:
        load_clip(str(path), {})
    assert "\n" not in str(e.value)


def test_a_missing_pt_file_is_one_line(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"featurizer.clip.model: no file .*ViT-B-16.pt"):
        load_clip(str(tmp_path / "ViT-B-16.pt"), {})
