"""`rim-bench plan`: the four mistakes it reports in one line each, before loading a model, and a
plan on the smoke benchmark (the real-size plan is in test_real_size.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from rim_bench.commands import plan
from rim_bench.commands.cli import main
from rim_bench.core.config import load_config
from rim_bench.run import weights
from rim_bench.stages.backbones.sam import RELEASES, released_checkpoint

SAM = ["proposer.name=sam", "proposer.sam.model_type=vit_b"]


def _plan_errors(capsys, *overrides: str) -> list[str]:
    """Run `rim-bench plan experiment=smoke ...`, expecting it to stop; its error lines."""
    assert main(["plan", "experiment=smoke", *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("rim-bench: error: ") for line in err), err
    return err


def _fake_sam(path: Path, width: int) -> Path:
    """A state dict holding only SAM's patch embedding, ``(width, 3, 16, 16)``: enough to tell the model type."""
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(width, 3, 16, 16)}, path)
    return path


def test_wrong_checkpoint_path(capsys, tmp_path):
    err = _plan_errors(capsys, *SAM, f"proposer.sam.checkpoint={tmp_path / 'sam_vit_b.pth'}")
    assert "proposer.sam.checkpoint: SAM checkpoint" in err[0] and "not found: download sam_vit_b_01ec64.pth" in err[0]
    assert "nothing was loaded" in err[-1]


def test_model_type_that_does_not_fit_the_checkpoint(capsys, tmp_path):
    checkpoint = _fake_sam(tmp_path / "sam_vit_h_4b8939.pth", 1280)
    err = _plan_errors(capsys, *SAM, f"proposer.sam.checkpoint={checkpoint}")
    assert "proposer.sam.model_type: 'vit_b' does not fit sam_vit_h_4b8939.pth, which holds a vit_h image encoder" \
        in err[0] and "set proposer.sam.model_type=vit_h" in err[0]


def test_truncated_checkpoint(capsys, tmp_path):
    checkpoint = tmp_path / "sam_vit_b_01ec64.pth"
    checkpoint.write_bytes(_fake_sam(tmp_path / "whole.pth", 768).read_bytes()[:1000])
    err = _plan_errors(capsys, *SAM, f"proposer.sam.checkpoint={checkpoint}")
    assert "is not a readable SAM state dict" in err[0]
    assert "the released sam_vit_b_01ec64.pth is 375,042,383 B" in err[0]


def test_hub_id_not_in_the_local_cache_while_offline(capsys, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    err = _plan_errors(capsys, "featurizer.dinov2.model=facebook/dinov2-base")
    assert err[0] == ("rim-bench: error: featurizer.dinov2.model: 'facebook/dinov2-base' is not in the local hub cache "
                      "and HF_HUB_OFFLINE is set: run `hf download facebook/dinov2-base` where there is a network "
                      "(see docs/weights.md), or pass a local folder")
    # Once in the cache (huggingface-hub's layout), it is found without a network.
    snapshot = tmp_path / "hub/models--facebook--dinov2-base/snapshots/abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs/main").write_text("abc123")
    cfg = load_config(["experiment=smoke", "featurizer.dinov2.model=facebook/dinov2-base"])
    notes, problems = weights.check_weights(cfg, torch.device("cpu"))
    assert not problems and "(hub cache" in notes[0]


def test_weights_and_data_problems_listed_together(capsys, tmp_path):
    """A missing data folder does not hide a missing SAM file, nor the other way round."""
    err = _plan_errors(capsys, *SAM, f"proposer.sam.checkpoint={tmp_path / 'sam_vit_b.pth'}",
                       f"data.root={tmp_path / 'no-data'}")
    assert "proposer.sam.checkpoint: SAM checkpoint" in err[0]
    assert f"data root '{tmp_path / 'no-data'}' does not exist" in err[1]
    assert "2 problem(s) with the weights or the data" in err[-1]


@pytest.mark.parametrize("command", ["test", "build-bank"])
def test_long_commands_check_the_weights_first(capsys, tmp_path, monkeypatch, command):
    """`test` and `build-bank` stop on a missing SAM file before reading data or loading a model."""
    from segment_anything import sam_model_registry

    monkeypatch.setitem(sam_model_registry, "vit_b", lambda **_: pytest.fail("SAM was loaded"))
    code = main([command, "experiment=smoke", *SAM, f"proposer.sam.checkpoint={tmp_path / 'sam_vit_b.pth'}",
                 f"data.root={tmp_path / 'no-data'}", f"output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("rim-bench: error: proposer.sam.checkpoint: SAM checkpoint") and "data" not in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("offline", [True, False])
def test_hub_model_missing_without_network_is_one_line_without_retries(capsys, tmp_path, monkeypatch, offline):
    """HF_HUB_OFFLINE, or no network: one line before any download is tried (huggingface-hub
    retried for 33 s)."""
    import transformers
    from huggingface_hub import constants

    from rim_bench.stages.backbones import hub

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(hub, "hub_unreachable", lambda: "huggingface.co: Name or service not known")
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("a download was tried"))
    assert main(["test", "experiment=smoke", "featurizer.dinov2.model=facebook/no-such-model",
                 f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    no_network = "the hub cannot be reached (huggingface.co: Name or service not known)"
    why = "HF_HUB_OFFLINE is set" if offline else no_network
    assert err == [f"rim-bench: error: featurizer.dinov2.model: 'facebook/no-such-model' is not in the local hub "
                   f"cache and {why}: run `hf download facebook/no-such-model` where there is a network (see "
                   "docs/weights.md), or pass a local folder"]


def test_local_folder_that_is_not_a_model(capsys, tmp_path):
    err = _plan_errors(capsys, f"featurizer.dinov2.model={tmp_path}")
    assert f"featurizer.dinov2.model: '{tmp_path}' is not a model folder (no config.json in it)" in err[0]


def test_gpu_too_small(capsys, tmp_path, monkeypatch):
    import rim_bench.run.assembly

    monkeypatch.setattr(rim_bench.run.assembly, "build_device", lambda cfg: torch.device("cuda"))
    monkeypatch.setattr(weights, "gpu_memory_bytes", lambda: 1_000_000_000)
    err = _plan_errors(capsys)
    assert "trainer: the GPU has 1.0 GB but these settings need about 2.1 GB" in err[0]


def test_gpu_memory_estimate_at_real_sizes():
    # SAM ViT-H, SD 1.5 in fp16 (half its 4.3 GB fp32 files), DINOv2-B: fits 24 GB, not 6 GB.
    sizes = {"SAM vit_h": RELEASES["vit_h"].bytes, "sd15": 2_130_000_000, "dinov2": 346_000_000}
    assert weights.check_gpu_memory(sizes, 24 * 1024**3) is None
    assert "the GPU has 6.0 GB but these settings need about 7.2 GB" in weights.check_gpu_memory(sizes, 6_000_000_000)


def test_released_checkpoint_by_size(tmp_path):
    sparse = tmp_path / "sam.pth"
    with open(sparse, "wb") as f:  # a sparse file of ViT-B's size: no disk used
        f.truncate(RELEASES["vit_b"].bytes)
    release, line = released_checkpoint(sparse)
    assert release is RELEASES["vit_b"] and "released sam_vit_b_01ec64.pth" in line
    release, line = released_checkpoint(sparse, md5=True)
    assert release is None and "not its MD5" in line
    small = tmp_path / "own.pth"
    small.write_bytes(b"x" * 10)
    assert released_checkpoint(small)[0] is None


def test_plan_on_smoke(capsys, smoke_root, tmp_path):
    # A cache of its own: other tests of the session may have computed these regions already.
    report = plan.run_plan(load_config(["experiment=smoke", f"data.root={smoke_root}",
                                        f"cache_dir={tmp_path / 'cache'}"]))
    out = capsys.readouterr().out
    assert "images: 24" in out and "regions cached for 0, 24 to compute" in out and "reference bank: to build" in out
    stages = {row["stage"]: row for row in report["projection"]}
    assert {"load models (test)", "proposals", "features", "pooling", "matching"} <= set(stages)
    assert stages["proposals"]["items"] == 24 and stages["load models (test)"]["items"] == 1
    assert all(row["seconds"] > 0 and row["peak_bytes"] > 0 for row in stages.values())
    assert "projected cost of the whole run" in out


def test_plan_counts_cached_work(capsys, tmp_path, smoke_root):
    """After a run, plan sees the regions and the bank cached (tiny generated references)."""
    from rim_bench.run.runner import run_test

    overrides = ["experiment=tiny", "data.max_images=3", f"output_dir={tmp_path / 'run'}",
                 f"data.root={smoke_root}", f"cache_dir={tmp_path / 'cache'}"]
    work = plan.run_plan(load_config(overrides), measure=False)["work"]
    classes = len([line for line in work.lines if line.startswith("  ")])
    assert work.items["proposals"] == 3 and "regions cached for 0, 3 to compute" in work.lines[0]
    assert work.items["generation"] == 2 * classes > 0 and "reference bank: to build" in work.lines[1]
    assert f"references to generate: {2 * classes} images, {2 * classes} (class, subcategory) shards" in work.lines[2]
    run_test(load_config(overrides))
    work = plan.run_plan(load_config(overrides), measure=False)["work"]
    assert work.items["proposals"] == 0 and work.items["generation"] == 0 and "reference bank: cached" in work.lines[1]
    # Without the bank, its stored references still count as made (the same keys as a build's).
    shutil.rmtree(work.lines[1].split("(")[1].rstrip(")"))
    work = plan.run_plan(load_config(overrides), measure=False)["work"]
    assert "reference bank: to build" in work.lines[1] and work.items["generation"] == 0
    assert "  " in work.lines[-1] and "0 images to generate,   0 of" in work.lines[-1]


def _clip_file(tmp_path: Path, poison: bool = False) -> Path:
    """A small random CLIP in OpenAI's state-dict format (NaN in ``visual.proj`` with `poison`)."""
    from rim_bench.stages.backbones.openai_clip import Architecture, random_state_dict

    arch = Architecture(width=64, layers=1, patch=16, grid=2, embed_dim=32, context=77, vocab=300,
                        text_width=32, text_layers=1)
    state = random_state_dict(arch)
    if poison:
        state["visual.proj"][0, 0] = float("nan")
    path = tmp_path / ("nan.pt" if poison else "ViT-B-16.pt")
    torch.save(state, path)
    return path


@pytest.mark.parametrize("damage", ["truncated", "nan"])
def test_plan_for_a_peer_names_a_bad_clip_file(damage: str, tmp_path: Path, capsys, smoke_root):
    """`plan method=sclip featurizer.clip.model=F` checks F itself (loadable, finite) and stops with exit 2."""
    path = _clip_file(tmp_path, poison=damage == "nan")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    assert main(["plan", "experiment=smoke", "method=sclip", f"featurizer.clip.model={path}",
                 f"data.root={smoke_root}"]) == 2
    err = capsys.readouterr().err
    expected = "key 'visual.proj' holds non-finite values" if damage == "nan" else "neither a TorchScript"
    assert "pixel.clip.model" in err or "featurizer.clip.model" in err
    assert expected in err and str(path) in err and "Traceback" not in err


def test_plan_for_a_peer_projects_its_own_stages(tmp_path: Path, capsys, smoke_root):
    """A good CLIP file passes; a peer's plan counts its text embeddings and the per-pixel stage, never a
    bank or regions, and (tiny CLIP) times them."""
    path = _clip_file(tmp_path)
    work = plan.run_plan(load_config(["experiment=smoke", "method=sclip", f"featurizer.clip.model={path}",
                                      f"data.root={smoke_root}"]), measure=False)["work"]
    text = "\n".join(work.lines)
    assert "every pixel labelled by pixel.clip" in text and "text embeddings" in text
    assert "reference bank:" not in text and "regions cached" not in text
    report = plan.run_plan(load_config(["experiment=smoke", "method=sclip", "pixel.clip.model=tiny",
                                        f"data.root={smoke_root}", f"cache_dir={tmp_path / 'cache'}"]))
    stages = {row["stage"]: row for row in report["projection"]}
    assert stages["pixel method"]["items"] == 24 and stages["text embeddings"]["items"] == 1
    assert not {"proposals", "features", "matching", "reference bank"} & set(stages)


def _offline_hub(monkeypatch, tmp_path: Path) -> Path:
    """An empty local hub cache with the hub off: every hub id is a download."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


def test_plan_without_weights_lists_each_download_and_the_projected_cost(capsys, tmp_path, monkeypatch):
    """`rim-bench plan experiment=rim_voc21` with no weights and no data: each download with its size and
    where it goes, then the run projected from docs/cost.md's per-item figures; it still stops (exit 2)."""
    from rim_bench.run.cost_figures import figure_sets

    hub = _offline_hub(monkeypatch, tmp_path)
    assert main(["plan", "experiment=rim_voc21", f"cache_dir={tmp_path / 'cache'}"]) == 2
    out = capsys.readouterr().out.splitlines()
    downloads = {line.split()[0]: line for line in out if line.startswith("  ") and " → " in line}
    sd15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert set(downloads) == {"sam_vit_h_4b8939.pth", "facebook/dinov2-base", sd15}
    sam = downloads["sam_vit_h_4b8939.pth"]  # one file for both SAM keys
    assert ": 2.56 GB → " in sam and "proposer.sam.checkpoint=PATH and references.diffusion.sam.checkpoint=PATH" in sam
    assert ": 0.35 GB → the hub cache, " + str(hub) in downloads["facebook/dinov2-base"]
    assert ": 4.30 GB → " in downloads[sd15]
    assert "  total 7.21 GB" in out

    start = next(i for i, line in enumerate(out) if line.startswith("projected cost of the whole run on voc21"))
    assert "(1,449 images), on a CPU: 2 shared cores" in out[start] and "docs/cost.md" in out[start + 1]
    rows = {line[:28].strip(): line[28:].split() for line in out[start + 3:] if not line.startswith(" ")}
    assert rows["generation"][:4] == ["23.5", "min", "420", "164.5"]  # 10 subcategories x 2 images x 21 classes
    assert rows["proposals"][2] == "1,449" and rows["load models (test)"][2] == "1"
    (cpu,) = figure_sets("regions")
    once = sum(s["seconds"] for s in cpu.stages.values())  # one of each; then the other 419 references, 1,448 images
    assert float(rows["total"][0]) == pytest.approx((once + 419 * (1410 + 234 + 2.0) + 1448 * (144 + 3.5)) / 3600,
                                                    abs=0.05)
    assert 250 < float(rows["total"][0]) < 252  # docs/cost.md's own projection: 251 h
    assert any(line.startswith("  on a GPU: not measured yet") for line in out)


def test_plan_without_weights_counts_the_data_that_is_there_and_says_what_differs(capsys, tmp_path, monkeypatch,
                                                                                   smoke_root):
    _offline_hub(monkeypatch, tmp_path)
    assert main(["plan", "experiment=smoke", *SAM, f"data.root={smoke_root}", f"cache_dir={tmp_path / 'cache'}"]) == 2
    out = capsys.readouterr().out
    assert "  sam_vit_b_01ec64.pth (proposer.sam.checkpoint): 0.38 GB → any folder" in out
    assert "images: 24 in " in out and "projected cost of the whole run on smoke (24 images)" in out
    assert "measured at other settings than this run's: proposer.sam.model_type=vit_b (measured: vit_h)" in out


def test_the_download_sizes_and_cost_figures_are_the_docs():
    """core/downloads.yaml holds docs/weights.md's SAM table; run/cost_figures.yaml, docs/cost.md's per-item one."""
    import re

    from rim_bench.run.cost_figures import figure_sets

    root = Path(__file__).resolve().parents[1]
    table = (root / "docs/weights.md").read_text()
    for model_type, release in RELEASES.items():
        assert f"| `{model_type}`" in table and f"`{release.file}`" in table
        assert re.search(rf"{release.file}\) \| {release.bytes:,} \| `{release.md5}`", table), release
    cost = (root / "docs/cost.md").read_text()
    (cpu,) = figure_sets("regions")
    for stage, figure in cpu.stages.items():
        row = re.search(rf"^\| {re.escape(stage)} \|[^|]*\| ([\d,.]+)[^|]*\| ([\d.]+) GB \|", cost, re.M)
        assert row and float(row[1].replace(",", "")) == figure["seconds"] and float(row[2]) == figure["peak_gb"], stage


def test_plan_without_weights_for_a_peer_names_its_file_and_measures_nothing(capsys, tmp_path, monkeypatch):
    _offline_hub(monkeypatch, tmp_path)
    missing = tmp_path / "ViT-B-16.pt"
    assert main(["plan", "experiment=voc21", "method=sclip", f"pixel.clip.model={missing}"]) == 2
    out = capsys.readouterr().out
    assert f"  {missing} (pixel.clip.model): size not listed → a file given as pixel.clip.model=PATH" in out
    assert "  total" not in out  # no size known: no total either
    assert "projected cost: no per-item figures measured for pipeline=pixel yet" in out
