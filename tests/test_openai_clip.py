"""OpenAI CLIP checkpoints in our own modules: architecture from tensor shapes, a TorchScript
archive and a plain state dict load to the same weights, CLIP's BPE tokenizer, the causal
text tower pooled at end-of-text, position embeddings for other grids."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from rim_bench.core.errors import ConfigError
from rim_bench.stages.backbones.openai_clip import (
    Architecture,
    BpeTokenizer,
    OpenAIClip,
    load_openai_clip,
    random_state_dict,
    read_state_dict,
)

# A BPE merges file of four merges: "c a", "ca t</w>", "d o", "do g</w>".
MERGES = ["c a", "ca t</w>", "d o", "do g</w>"]
BYTES = 256


def tiny_arch(vocab: int) -> Architecture:
    return Architecture(width=64, layers=2, patch=16, grid=4, embed_dim=32, context=12, vocab=vocab, text_width=64,
                        text_layers=2)


@pytest.fixture
def bpe(tmp_path: Path) -> Path:
    path = tmp_path / "bpe.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: test\n" + "\n".join(MERGES) + "\n")
    return path


def test_tokenizer_merges_by_rank_in_clips_vocabulary_order(bpe: Path):
    tok = BpeTokenizer(bpe)
    assert len(tok) == 2 * BYTES + len(MERGES) + 2
    cat, dog = 2 * BYTES + 1, 2 * BYTES + 3  # the tokens of merges 2 and 4
    a_end = BYTES + 64  # "a</w>": byte symbols run from "!" (33), so "a" (97) is the 65th; 320 in CLIP's vocabulary
    dot_end = BYTES + ord(".") - ord("!")
    assert tok.encode("A  Cat.") == [a_end, cat, dot_end]  # lower-cased, spaces collapsed, "." its own word
    assert tok.encode("dog") == [dog]
    assert tok.encode("cot") == [ord("c") - 33, ord("o") - 33, BYTES + ord("t") - 33]  # no merge applies
    ids = tok(["a dog"], context=6)
    sot, eot = len(tok) - 2, len(tok) - 1
    assert ids.tolist() == [[sot, a_end, dog, eot, 0, 0]]
    with pytest.raises(ConfigError, match="more than CLIP's context"):
        tok(["a dog a dog"], context=4)


def test_architecture_is_read_from_the_tensor_shapes():
    arch = Architecture(width=128, layers=3, patch=8, grid=5, embed_dim=48, context=9, vocab=600, text_width=64,
                        text_layers=1)
    assert Architecture.of(random_state_dict(arch)) == arch


class _Archive(OpenAIClip):
    """Our model traced into TorchScript, with the non-weight entries of OpenAI's archive."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__(arch)
        self.register_buffer("input_resolution", torch.tensor(arch.patch * arch.grid))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.visual(images).sum() + self.encode_text(tokens).sum()


def test_a_torchscript_archive_and_a_plain_state_dict_load_to_the_same_weights(tmp_path: Path):
    arch = tiny_arch(vocab=600)
    state = random_state_dict(arch, seed=3)
    torch.save(state, tmp_path / "plain.pt")
    archive = _Archive(arch)
    archive.load_state_dict(state, strict=False)
    traced = torch.jit.trace(archive.eval(), (torch.zeros(1, 3, 64, 64), torch.ones(1, arch.context, dtype=torch.long)))
    traced.save(str(tmp_path / "archive.pt"))
    plain, scripted = read_state_dict(tmp_path / "plain.pt"), read_state_dict(tmp_path / "archive.pt")
    assert "input_resolution" not in scripted and sorted(plain) == sorted(scripted)
    assert all(torch.equal(plain[k], scripted[k]) for k in plain)
    model = load_openai_clip(tmp_path / "archive.pt")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_bad_checkpoints_raise_one_line_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="no file"):
        load_openai_clip(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="neither a TorchScript archive nor a state dict"):
        load_openai_clip(tmp_path / "junk.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="no OpenAI CLIP ViT weights"):
        load_openai_clip(tmp_path / "other.pt")


def _nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[3] = float("nan")
    return t


@pytest.mark.parametrize(("key", "damage", "message"), [
    ("visual.proj", _nan, r"key 'visual\.proj' holds non-finite values \(NaN or inf\)"),
    ("ln_final.bias", lambda t: t + float("inf"), r"key 'ln_final\.bias' holds non-finite values"),
    ("visual.conv1.weight", lambda t: t[0], r"key 'visual\.conv1\.weight' is shape \(3, 16, 16\), an OpenAI CLIP "
                                            r"ViT's has 4 dimensions"),
    ("visual.ln_post.weight", lambda t: t[:10], r"key 'visual\.ln_post\.weight' is of shape \(10,\), the "
                                                r"architecture its other keys give needs \(64,\)"),
    ("visual.proj", lambda t: "weights", r"key 'visual\.proj' is a str, not float weights"),
    ("token_embedding.weight", lambda t: t.long(), r"key 'token_embedding\.weight' is a torch\.int64 tensor"),
    ("transformer.resblocks.1.ln_1.weight", None, r"key 'transformer\.resblocks\.1\.ln_1\.weight' is missing"),
])
def test_a_damaged_clip_file_is_one_line_naming_the_key(tmp_path: Path, key, damage, message):
    """Issue 27: a NaN in visual.proj ran to an all-background mIoU; a wrong-rank conv1 or a string
    in the file gave a traceback."""
    state = random_state_dict(tiny_arch(600))
    if damage is None:
        del state[key]
    else:
        state[key] = damage(state[key])
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=message) as e:
        load_openai_clip(tmp_path / "bad.pt")
    assert "\n" not in str(e.value) and str(tmp_path / "bad.pt") in str(e.value)


def _model(tmp_path: Path, vocab: int = 600) -> OpenAIClip:
    torch.save(random_state_dict(tiny_arch(vocab), seed=5), tmp_path / "m.pt")
    return load_openai_clip(tmp_path / "m.pt")


def test_text_is_causal_and_pooled_at_the_end_of_text_token(tmp_path: Path):
    model = _model(tmp_path)
    eot = 599
    tokens = torch.tensor([[598, 5, 6, eot, 0, 0, 0, 0, 0, 0, 0, 0]])
    after = tokens.clone()
    after[0, 5] = 7  # a token after the end of text: invisible to it under the causal mask
    before = tokens.clone()
    before[0, 1] = 7
    out = model.encode_text(tokens)
    assert out.shape == (1, 32)
    assert torch.equal(out, model.encode_text(after))
    assert not torch.allclose(out, model.encode_text(before))


def test_position_embeddings_keep_the_pretraining_grid_and_resize_for_others(tmp_path: Path):
    visual = _model(tmp_path).visual
    assert visual.positions(4, 4) is visual.positional_embedding
    resized = visual.positions(6, 3)
    assert resized.shape == (1 + 18, 64)
    assert torch.equal(resized[0], visual.positional_embedding[0])  # the class token's is kept
    tokens, grid = visual.tokens_before_last(torch.zeros(2, 3, 96, 50))  # 2 pixels under one patch: dropped
    assert grid == (6, 3) and tokens.shape == (2, 19, 64)
    assert visual(torch.zeros(2, 3, 64, 64)).shape == (2, 32)
