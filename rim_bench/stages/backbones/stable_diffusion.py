"""Stable Diffusion from diffusers: the only module that imports diffusers.

`load_stable_diffusion` takes a hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``,
``stabilityai/stable-diffusion-2-1-base``), a local directory saved with
``save_pretrained``, or ``"tiny"``: random-init components small enough for a CPU test
(a 64×64 image in 5 steps takes about half a second), with a character-level CLIP
tokenizer (`rim_bench.stages.backbones.clip.tiny_clip_tokenizer`), so that most words span several tokens.
"""

from __future__ import annotations

import warnings

import torch

from rim_bench.stages.backbones.clip import tiny_clip_tokenizer
from rim_bench.stages.backbones.hub import from_hub_or_dir


def load_stable_diffusion(model: str, device: torch.device | str, tiny: dict):
    """A `StableDiffusionPipeline` on `device`: fp16 on CUDA, fp32 on the CPU; no safety checker.

    Args:
        model: hub id, local directory, or ``"tiny"``.
        device: where to run it.
        tiny: ``seed`` and ``sample_size`` (latent side) for the ``"tiny"`` pipeline.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    device = torch.device(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if model == "tiny":
        pipe = _tiny_pipeline(**tiny).to(dtype=dtype)
    else:
        with warnings.catch_warnings():
            # Recent diffusers (PR #14205, 2026) deprecate `torch_dtype` for `dtype`, which older
            # ones do not accept: `torch_dtype` works with every diffusers >= 0.30 we support.
            warnings.filterwarnings("ignore", message=".*`torch_dtype` is deprecated")
            pipe = from_hub_or_dir(
                lambda source: StableDiffusionPipeline.from_pretrained(
                    source, torch_dtype=dtype, safety_checker=None, feature_extractor=None,
                    requires_safety_checker=False,
                ),
                model, "references.diffusion.model", "Stable Diffusion", "stable-diffusion-v1-5/stable-diffusion-v1-5",
            )
        # DDIM: deterministic given the initial noise, so a seed fixes the image.
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _tiny_pipeline(seed: int, sample_size: int):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
        )
        vae = AutoencoderKL(
            block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        )
        tokenizer = tiny_clip_tokenizer()
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ))
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )

