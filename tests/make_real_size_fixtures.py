"""Build the real-size models with random weights, in the on-disk formats of the real downloads.

    python tests/make_real_size_fixtures.py            # all of them (about 9 GB, a few minutes)
    python tests/make_real_size_fixtures.py sam_vit_b dinov2_base    # some of them

Output: ``$RIM_BENCH_FIXTURES`` (default ``~/.cache/rim-bench-fixtures``), never the repository:

- ``sam_vit_b_random.pth``, ``sam_vit_h_random.pth``: state dicts, as ``sam_vit_b_01ec64.pth`` and
  ``sam_vit_h_4b8939.pth`` (for ``proposer.sam.checkpoint`` with ``model_type=vit_b`` / ``vit_h``);
- ``dinov2-with-registers-base/``, ``dinov2-with-registers-large/``: config.json + model.safetensors
  (for ``featurizer.dinov2.model``);
- ``stable-diffusion-v1-5/``: a diffusers folder with CLIP's real BPE tokenizer
  (for ``references.diffusion.model``);
- ``sam2.1_hiera_t_random.pt``: ``{"model": state dict}``, as ``sam2.1_hiera_tiny.pt`` (for
  ``proposer.sam2.checkpoint`` with ``model_type=sam2.1_hiera_t``); built only when asked by name,
  with the optional `sam2` package installed.

Every architecture number is written here from its published source (cited next to it)
rather than read from a download, so the folders need no network; only the weights are
random (seed 0). Weights are fp32, as the released files are. Each model is written to a
temporary name and renamed when complete, so an interrupted build leaves nothing that
looks finished, and a second run skips what exists.

CLIP's BPE vocabulary (``bpe_simple_vocab_16e6.txt.gz``, 1.36 MB) is the copy that ships with
rim-bench (``rim_bench.stages.backbones.openai_clip.find_bpe``), or ``--bpe PATH``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rim_bench.stages.backbones.openai_clip import find_bpe

FIXTURES_ENV = "RIM_BENCH_FIXTURES"
DEFAULT_DIR = "~/.cache/rim-bench-fixtures"
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
SEED = 0

# name → file or folder written under the fixture directory.
OUTPUTS = {
    "sam_vit_b": "sam_vit_b_random.pth",
    "sam_vit_h": "sam_vit_h_random.pth",
    "dinov2_base": "dinov2-with-registers-base",
    "dinov2_large": "dinov2-with-registers-large",
    "sd15": "stable-diffusion-v1-5",
    "sam2_hiera_t": "sam2.1_hiera_t_random.pt",
}
OPTIONAL = {"sam2_hiera_t"}  # needs an optional package: built when named, not by default


def fixture_dir() -> Path:
    return Path(os.environ.get(FIXTURES_ENV, DEFAULT_DIR)).expanduser()


def fixture_path(name: str, root: Path | None = None) -> Path:
    """Where fixture `name` (a key of `OUTPUTS`) is, built or not."""
    return (root or fixture_dir()) / OUTPUTS[name]


# --- SAM -------------------------------------------------------------------------------------
# segment-anything's own builders hold the published configurations (segment_anything/build_sam.py:
# vit_b 768 wide, 12 blocks, 12 heads, global attention in blocks 2, 5, 8, 11; vit_h 1280, 32, 16,
# blocks 7, 15, 23, 31); with checkpoint=None they initialise randomly.

def _sam(model_type: str) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        from segment_anything import sam_model_registry

        torch.manual_seed(SEED)
        sam = sam_model_registry[model_type](checkpoint=None)
        torch.save(sam.state_dict(), out)  # the released .pth files are plain state dicts

    return build


def _sam2(config: str) -> Callable[[Path], None]:
    """SAM 2 from the sam2 package's own config (configs/sam2.1/sam2.1_hiera_t.yaml: Hiera 96 wide,
    stages 1, 2, 7, 2), randomly initialised; saved as the released files are, ``{"model": ...}``."""
    def build(out: Path) -> None:
        from sam2.build_sam import build_sam2

        torch.manual_seed(SEED)
        torch.save({"model": build_sam2(config, None, device="cpu").state_dict()}, out)

    return build


# --- DINOv2 with registers -------------------------------------------------------------------
# Oquab et al., "DINOv2", arXiv 2304.07193, Table 17 (ViT-B/14: 768 wide, 12 blocks, 12 heads;
# ViT-L/14: 1024, 24, 16; MLP ratio 4, patch 14, trained at 518 px); Darcet et al., "Vision
# Transformers Need Registers", arXiv 2309.16588: 4 registers. The remaining fields are those of
# the hub's facebook/dinov2-with-registers-{base,large} config.json (layer scale 1.0, LayerNorm eps
# 1e-6, GELU MLP, qkv bias).
DINOV2_COMMON = dict(
    patch_size=14, image_size=518, num_register_tokens=4, mlp_ratio=4, layerscale_value=1.0,
    layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True, use_swiglu_ffn=False, drop_path_rate=0.0,
)


def _dinov2(hidden_size: int, layers: int, heads: int) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        torch.manual_seed(SEED)
        config = Dinov2WithRegistersConfig(
            hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads, **DINOV2_COMMON
        )
        Dinov2WithRegistersModel(config).eval().save_pretrained(out)

    return build


# --- Stable Diffusion 1.5 --------------------------------------------------------------------
# The fields of the hub's stable-diffusion-v1-5/stable-diffusion-v1-5 unet/, vae/, text_encoder/
# and scheduler/ config.json files (the same as Rombach et al., arXiv 2112.10752, Table 15's
# text-to-image LDM: 320 base channels, multipliers 1, 2, 4, 4, 2 blocks per level, attention
# at the three finest levels, 8 heads, 768-dim cross-attention from CLIP ViT-L/14's text tower).
UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1, center_input_sample=False,
)
VAE = dict(
    sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, act_fn="silu",
)
# CLIP ViT-L/14's text transformer (Radford et al., arXiv 2103.00020, Table 20: width 768,
# 12 layers, 12 heads, 77 tokens, a 49,408-token BPE vocabulary); token ids 0/2/1 as in
# text_encoder/config.json.
TEXT_ENCODER = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, layer_norm_eps=1e-5,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
SCHEDULER = dict(  # through from_config: clip_sample is in the published file, not PNDM's arguments
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False,
)


def _stable_diffusion(bpe: Path | None) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        tokenizer = clip_tokenizer(bpe)
        torch.manual_seed(SEED)
        pipe = StableDiffusionPipeline(
            vae=AutoencoderKL(**VAE), text_encoder=CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER)).eval(),
            tokenizer=tokenizer, unet=UNet2DConditionModel(**UNET), scheduler=PNDMScheduler.from_config(SCHEDULER),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.save_pretrained(out)

    return build


def clip_tokenizer(bpe: Path | None = None):
    """CLIP's tokenizer (49,408 tokens) rebuilt from its BPE merges, as openai/CLIP's
    ``SimpleTokenizer`` derives its vocabulary: the 256 byte symbols, the same with ``</w>``,
    one token per merge of lines 1..48,894 of the file, then the two special tokens."""
    from transformers import CLIPTokenizer

    lines = gzip.open(bpe or find_bpe(), "rt", encoding="utf-8").read().split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder = Path(tempfile.mkdtemp(prefix="clip-bpe-"))
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    # SD 1.5's tokenizer pads with <|endoftext|> (its tokenizer/special_tokens_map.json).
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                              pad_token="<|endoftext|>")
    shutil.rmtree(folder)
    return tokenizer


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes, in openai/CLIP's (and GPT-2's) ``bytes_to_unicode``
    order: printable Latin-1 bytes map to themselves, the rest to code points from 256 on."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(rest))]


def builders(bpe: Path | None = None) -> dict[str, Callable[[Path], None]]:
    return {
        "sam_vit_b": _sam("vit_b"),
        "sam_vit_h": _sam("vit_h"),
        "dinov2_base": _dinov2(768, 12, 12),
        "dinov2_large": _dinov2(1024, 24, 16),
        "sd15": _stable_diffusion(bpe),
        "sam2_hiera_t": _sam2("configs/sam2.1/sam2.1_hiera_t.yaml"),
    }


def make(names: list[str] | None = None, root: Path | None = None, bpe: Path | None = None) -> dict[str, Path]:
    """Build the fixtures `names` (all by default) that do not exist yet; return every path."""
    root = root or fixture_dir()
    root.mkdir(parents=True, exist_ok=True)
    todo = builders(bpe)
    for name in names or [n for n in todo if n not in OPTIONAL]:
        out = fixture_path(name, root)
        if out.exists():
            print(f"{name}: {out} exists")
            continue
        for stale in root.glob(f"{out.name}.partial-*"):  # left by an interrupted build
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
        start = time.perf_counter()
        todo[name](partial)
        os.replace(partial, out)  # a file or a folder: complete, or not there
        size = sum(f.stat().st_size for f in out.rglob("*")) if out.is_dir() else out.stat().st_size
        print(f"{name}: {out} ({size / 1e9:.2f} GB, {time.perf_counter() - start:.0f} s)")
    return {name: fixture_path(name, root) for name in OUTPUTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"fixtures to build: {', '.join(OUTPUTS)} (default: all)")
    parser.add_argument("--out", type=Path, default=None, help=f"default: ${FIXTURES_ENV} or {DEFAULT_DIR}")
    parser.add_argument("--bpe", type=Path, default=None, help=f"a local {BPE_NAME}")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(OUTPUTS))
    if unknown:
        parser.error(f"unknown fixture {', '.join(unknown)} (choose from {', '.join(OUTPUTS)})")
    make(args.names or None, args.out, args.bpe)


if __name__ == "__main__":
    main()
