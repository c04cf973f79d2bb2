"""Real-size architectures with random weights, through the commands and keys a user sets.

The slow tests (``python -m pytest -m slow -k real_size``) run `rim-bench build-bank` (one
class, one subcategory, one image, 2 denoising steps, 512 px), `rim-bench test` on 2
VOC-size images (SAM at 1024 px, DINOv2 at 448 px with the sliding window) and
`rim-bench plan`, on the folders `make_real_size_fixtures.py` builds (SAM ViT-B, DINOv2
ViT-B/14 with registers, Stable Diffusion 1.5 with CLIP's real tokenizer). A missing
fixture is built first (about 9 GB, minutes); with ``RIM_BENCH_FIXTURES_BUILD=0`` the
tests skip instead and say the command to run.

The checks themselves (which cross-attention layers were captured, where the class word's
tokens are) are plain functions, and the fast tests below show each one fails when the
capture is set on the wrong layers or the token positions are off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from make_real_size_fixtures import FIXTURES_ENV, fixture_path, make
from PIL import Image

from rim_bench.core.errors import ConfigError
from rim_bench.stages.references import attention, diffusion, generation
from rim_bench.stages.references.bank import load_bank, load_shard

BUILD_ENV = "RIM_BENCH_FIXTURES_BUILD"
GB = 1e9
# Peak resident memory per command (fp32 on the CPU), with room above what was measured here:
# build-bank holds Stable Diffusion 1.5 (4.3 GB of weights), SAM ViT-B and DINOv2-B; the test
# SAM and DINOv2, whose 1024 px encoder materializes 4096 x 4096 attention maps (4.3 GB measured);
# plan holds every model at once, as `rim-bench test` does when it builds the bank (8.5 GB measured
# in its prompted-SAM stage).
BUILD_BANK_PEAK_GB = 9.0
TEST_PEAK_GB = 6.0
PLAN_STAGE_PEAK_GB = 10.0
POTTED_PLANT = "pottedplant, potted plant, houseplant, plant in a pot\n"  # voc21's line
WIDTH = 768  # DINOv2 ViT-B/14 (make_real_size_fixtures.py)


# --- The checks ----------------------------------------------------------------------------------

def expected_cross_attention_calls(unet: dict, vae_scale: int, image_size: int, steps: int) -> dict[str, int]:
    """Cross-attention calls per map side in `steps` denoising steps of a `UNet2DConditionModel`
    with config `unet`, derived from the config alone: a cross-attention down block holds
    ``layers_per_block`` transformers, an up block one more, the middle block one; level i
    works at ``latent side / 2**i``. With classifier-free guidance each layer is one call per step."""
    side = image_size // vae_scale
    levels = len(unet["down_block_types"])
    per_step: Counter = Counter()
    for i, kind in enumerate(unet["down_block_types"]):
        if kind.startswith("CrossAttn"):
            per_step[side >> i] += unet["layers_per_block"]
    for j, kind in enumerate(unet["up_block_types"]):
        if kind.startswith("CrossAttn"):
            per_step[side >> (levels - 1 - j)] += unet["layers_per_block"] + 1
    if unet.get("mid_block_type", "UNetMidBlock2DCrossAttn") == "UNetMidBlock2DCrossAttn":
        per_step[side >> (levels - 1)] += 1
    return {str(s): n * steps for s, n in sorted(per_step.items())}


def check_attention_calls(record: dict, unet: dict, vae_scale: int, image_size: int, steps: int,
                          resolutions: list[int]) -> None:
    """The capture ran on every cross-attention layer at the wanted sides, on no other."""
    expected = expected_cross_attention_calls(unet, vae_scale, image_size, steps)
    wanted = {str(r): expected.get(str(r), 0) for r in resolutions}
    assert record["attention_calls"] == wanted, (record["attention_calls"], wanted)


def check_token_positions(tokenizer, prompt: str, word: str, positions: list[int]) -> None:
    """`positions` are the prompt's last run of tokens that spell `word`, counted with the start token
    (compared without spaces: CLIP decodes "double-decker" as "double - decker")."""
    ids = tokenizer(prompt).input_ids
    squeeze = lambda text: "".join(text.lower().split())  # noqa: E731
    assert positions == list(range(positions[0], positions[-1] + 1)), positions
    assert squeeze(tokenizer.decode([ids[p] for p in positions])) == squeeze(word), (prompt, word, positions)
    later = [ids[p] for p in range(positions[-1] + 1, len(ids))]
    target = [ids[p] for p in positions]
    assert not any(later[i:i + len(target)] == target for i in range(len(later))), (prompt, word, positions)


# --- Fast: the checks fail when they should --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_pipe():
    from rim_bench.stages.backbones.stable_diffusion import load_stable_diffusion

    return load_stable_diffusion("tiny", "cpu", {"seed": 0, "sample_size": 32})


def _tiny_record(pipe, word: str = "cat") -> dict:
    record: dict = {}
    diffusion.generate_with_attention(pipe, f"a photo of a {word}", word, [1], 64, 2, 7.5, (16,), record=record)
    return record


def test_attention_check_passes_on_the_cross_attention_layers(tiny_pipe):
    record = _tiny_record(tiny_pipe)
    assert record["attention_calls"] == {"16": 8}  # (1 down + 1 middle + 2 up) layers x 2 steps
    check_attention_calls(record, dict(tiny_pipe.unet.config), tiny_pipe.vae_scale_factor, 64, 2, [16])


def test_attention_check_fails_on_the_wrong_layers(tiny_pipe, monkeypatch):
    monkeypatch.setattr(attention, "is_cross_attention", lambda name: name.startswith("down_blocks")
                        and name.endswith("attn2.processor"))
    record = _tiny_record(tiny_pipe)
    with pytest.raises(AssertionError):
        check_attention_calls(record, dict(tiny_pipe.unet.config), tiny_pipe.vae_scale_factor, 64, 2, [16])
    # Self-attention instead of cross-attention: nothing is captured at all.
    monkeypatch.setattr(attention, "is_cross_attention", lambda name: name.endswith("attn1.processor"))
    with pytest.raises(ConfigError, match="no cross-attention layer"):
        _tiny_record(tiny_pipe)


def test_token_check_fails_on_shifted_positions(tiny_pipe, monkeypatch):
    record = _tiny_record(tiny_pipe, "dog")
    check_token_positions(tiny_pipe.tokenizer, "a photo of a dog", "dog", record["token_indices"])
    real = attention.word_token_indices
    monkeypatch.setattr(generation, "word_token_indices", lambda *a: [i - 1 for i in real(*a)])  # no start token
    with pytest.raises(AssertionError):
        shifted = _tiny_record(tiny_pipe, "dog")["token_indices"]
        check_token_positions(tiny_pipe.tokenizer, "a photo of a dog", "dog", shifted)


def test_expected_calls_for_stable_diffusion_1_5():
    from make_real_size_fixtures import UNET

    config = {k: list(v) if isinstance(v, tuple) else v for k, v in UNET.items()}
    # 64x64 latents at 512 px: 5 cross-attention layers at each of 64, 32, 16, and the middle one at 8.
    assert expected_cross_attention_calls(config, 8, 512, 1) == {"8": 1, "16": 5, "32": 5, "64": 5}


# --- Slow: the real sizes ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def fixtures() -> dict[str, Path]:
    names = ["sam_vit_b", "sam_vit_h", "dinov2_base", "sd15"]
    if os.environ.get(BUILD_ENV, "1") == "0" and not all(fixture_path(n).exists() for n in names):
        pytest.skip(f"real-size fixtures missing in ${FIXTURES_ENV}: run `python tests/make_real_size_fixtures.py`")
    return make(names)


def write_voc(root: Path, sizes: list[tuple[int, int]]) -> Path:
    """Random images of the given ``(H, W)`` in the VOC layout, labelled 0 with a top band of 255."""
    base = root / "VOCdevkit/VOC2012"
    rng = np.random.default_rng(0)
    ids = [f"2007_{i:06d}" for i in range(1, len(sizes) + 1)]
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    for image_id, (h, w) in zip(ids, sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(base / f"JPEGImages/{image_id}.jpg")
        label = np.zeros((h, w), dtype=np.uint8)
        label[: h // 8] = 255
        Image.fromarray(label).save(base / f"SegmentationClass/{image_id}.png")
    (base / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    """Two VOC-size images: 500x375 landscape and 375x500 portrait."""
    return write_voc(tmp_path_factory.mktemp("voc"), [(375, 500), (500, 375)])


def test_one_class_vocabulary_runs(tmp_path):
    """Found by the slow tier (one class, to keep Stable Diffusion to one image): torchmetrics
    squeezed the one-class IoU to a 0-d tensor and `rim-bench test` failed at the end."""
    from rim_bench.core.config import load_config
    from rim_bench.run.runner import run_test

    root = write_voc(tmp_path / "voc", [(40, 48), (48, 40)])
    (root / "classes.txt").write_text("background, backdrop\n")
    metrics = run_test(load_config(["experiment=tiny", "data.name=voc21", f"data.root={root}",
                                    f"data.classes={root / 'classes.txt'}", f"output_dir={tmp_path / 'run'}"]))
    assert metrics["num_images"] == 2 and list(metrics["per_class_iou"]) == ["background"]


def _overrides(fixtures: dict[str, Path], voc_root: Path, cache: Path) -> list[str]:
    """rim_voc21 with the fixture folders, one class (potted plant), one reference image, 2 steps."""
    classes = voc_root / "classes.txt"
    classes.write_text(POTTED_PLANT)
    return [
        "experiment=rim_voc21", f"data.root={voc_root}", f"data.classes={classes}", f"cache_dir={cache}",
        f"proposer.sam.checkpoint={fixtures['sam_vit_b']}", "proposer.sam.model_type=vit_b",
        f"featurizer.dinov2.model={fixtures['dinov2_base']}",
        f"references.diffusion.model={fixtures['sd15']}", "references.diffusion.n_subcategories=1",
        "references.diffusion.images_per_subcategory=1", "references.diffusion.num_inference_steps=2",
        "references.diffusion.image_size=512", "trainer.accelerator=cpu",
        # Random SAM weights predict no mask at segment-anything's default thresholds.
        "proposer.sam.points_per_side=8", "proposer.sam.pred_iou_thresh=0", "proposer.sam.stability_score_thresh=0",
        "proposer.sam.min_area=0",
    ]


# `rim-bench ARGS`, then the process's own peak resident memory on stderr.
_CLI_WITH_PEAK = ("import resource, sys; from rim_bench.commands.cli import main; rc = main(sys.argv[1:]); "
                  "print(f'peak_kb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr); "
                  "sys.exit(rc)")


def _run(*args: str) -> tuple[str, float]:
    """Run `rim-bench ...` in a child process, offline; its stdout and its peak resident memory in GB."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", _CLI_WITH_PEAK, *args], capture_output=True, text=True,
                            env=env, timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    peak_kb = int(result.stderr.rsplit("peak_kb=", 1)[1].split()[0])
    return result.stdout, peak_kb * 1024 / GB


@pytest.mark.slow
def test_real_size_build_bank_and_test(fixtures, voc_root, tmp_path):
    cache = tmp_path / "cache"
    overrides = _overrides(fixtures, voc_root, cache)

    out, peak = _run("build-bank", *overrides)
    print(f"build-bank: peak resident memory {peak:.2f} GB")
    assert "reference bank: 1 references (built)" in out, out
    assert peak < BUILD_BANK_PEAK_GB, f"build-bank peaked at {peak:.1f} GB"
    # The stored generation: the class word's tokens under the real tokenizer, and the layers captured.
    (shard,) = (cache / "generated").glob("*/pottedplant/*.safetensors")
    tensors, info = load_shard(shard)
    sd = fixtures["sd15"]
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(sd / "tokenizer")
    assert info["prompt"] == "a photo of a potted plant" and info["token_indices"] == [5, 6]
    check_token_positions(tokenizer, info["prompt"], info["word"], info["token_indices"])
    unet = json.loads((sd / "unet/config.json").read_text())
    vae_scale = 2 ** (len(json.loads((sd / "vae/config.json").read_text())["block_out_channels"]) - 1)
    check_attention_calls(info, unet, vae_scale, 512, 2, [16])
    assert info["attention_calls"] == {"16": 10}  # SD 1.5: 5 layers at 16x16 (at 512 px) x 2 steps
    assert tensors["maps"].shape == (1, 512, 512) and tensors["images"].shape == (1, 512, 512, 3)
    (bank_dir,) = [p for p in (cache / "banks").iterdir() if p.is_dir() and "." not in p.name]
    assert load_bank(bank_dir).features.shape == (1, WIDTH)

    out, peak = _run("test", *overrides, f"output_dir={tmp_path / 'run'}")
    print(f"test: peak resident memory {peak:.2f} GB")
    assert "(cached" in out, out  # the bank build-bank made
    assert peak < TEST_PEAK_GB, f"test peaked at {peak:.1f} GB"
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["num_images"] == 2
    from safetensors.torch import load_file

    # Region files are named by image content, not by id: compare the set of image sizes.
    cached = [load_file(str(path)) for path in (cache / "regions").glob("*/*.safetensors")]
    assert sorted(tuple(c["region_map"].shape) for c in cached) == [(375, 500), (500, 375)]
    assert all(c["features"].shape[1] == WIDTH and len(c["features"]) >= 1 for c in cached)


@pytest.mark.slow
def test_real_size_class_words_under_the_real_tokenizer(fixtures):
    from transformers import CLIPTokenizer

    from rim_bench.data.classes import read_classes
    from rim_bench.stages.references.subcategory_lists import load_subcategories

    tokenizer = CLIPTokenizer.from_pretrained(fixtures["sd15"] / "tokenizer")
    # Positions counted with the start token; sub-tokens from CLIP's BPE ("tvmonitor" is "tv" + "monitor").
    for sub, word, positions in [("potted plant", "potted plant", [5, 6]), ("tvmonitor", "tvmonitor", [5, 6]),
                                 ("motorbike", "motorbike", [5]), ("houseplant in a pot", "houseplant", [5, 6]),
                                 ("wall-mounted tv", "tv", [8]), ("cruiser motorcycle", "motorcycle", [6]),
                                 ("double-decker bus", "double-decker bus", [5, 6, 7, 8])]:
        prompt = f"a photo of a {sub}"
        assert attention.word_token_indices(tokenizer, prompt, word) == positions, sub
        check_token_positions(tokenizer, prompt, word, positions)
    # Every VOC subcategory's prompt: the word the attention is read from, where the tokenizer puts it.
    classes = read_classes("voc21")
    table = load_subcategories("voc", [c[0] for c in classes], None)
    for names in classes:
        for sub in table[names[0]]:
            prompt, word = f"a photo of a {sub}", attention.class_word(sub, names)
            check_token_positions(tokenizer, prompt, word, attention.word_token_indices(tokenizer, prompt, word))


@pytest.mark.slow
def test_real_size_plan(fixtures, voc_root, tmp_path, capsys):
    from rim_bench.commands.plan import run_plan
    from rim_bench.core.config import load_config
    from rim_bench.core.errors import ConfigError

    overrides = _overrides(fixtures, voc_root, tmp_path / "cache")
    report = run_plan(load_config(overrides))
    stages = {row["stage"]: row for row in report["projection"]}
    assert {"generation", "sam", "dinov2", "proposals", "features", "matching"} <= set(stages)
    for row in stages.values():
        assert row["peak_bytes"] < PLAN_STAGE_PEAK_GB * GB, row
    assert stages["generation"]["items"] == 1 and stages["proposals"]["items"] == 2
    assert not list((tmp_path / "cache").glob("generated/*/*/*.safetensors"))  # the dry run left no cache
    # ViT-H's architecture under model_type=vit_b: one line per SAM that uses it, before anything loads.
    capsys.readouterr()
    with pytest.raises(ConfigError, match="2 problem"):
        run_plan(load_config([*overrides, f"proposer.sam.checkpoint={fixtures['sam_vit_h']}"]), measure=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":", 2)[2].split(".model_type")[0].strip() for line in err] == [
        "proposer.sam", "references.diffusion.sam"]
    assert all("'vit_b' does not fit sam_vit_h_random.pth, which holds a vit_h image encoder" in line for line in err)
