"""The weights a run needs, checked in seconds before anything loads: `rim-bench plan` lists what it
finds, and the long commands (`test`, `build-bank`, `sweep`, `suite`) stop on a problem (`require_weights`).

SAM checkpoints (path, released size, ``model_type`` against the file), hub ids against the local hub
cache (when it is offline or cannot be reached), local model folders, files a stage checks itself
(a CLIP file: loadable, finite), and the GPU's memory against the weights' size. The method says what
it needs (`rim_bench.core.protocols.Method.weights`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from rim_bench.core.downloads import hub_size
from rim_bench.core.errors import ConfigError, RimBenchError
from rim_bench.core.params import FileWeights, HubWeights, SamWeights
from rim_bench.run.assembly import Assembly, build_device

GB = 1e9
# Working memory beyond the weights on a GPU (activations, SAM's 1024 px masks, the UNet's
# attention at 512 px in fp16): our rough allowance for the check before loading; the dry run
# then measures the real peak.
GPU_HEADROOM_BYTES = 2 * 1024**3


def check_weights(cfg: DictConfig, device: torch.device) -> tuple[list[str], list[str]]:
    """Notes and one-line problems about every model the config uses, without loading one."""
    from rim_bench.stages.backbones.sam import check_checkpoint, released_checkpoint

    notes: list[str] = []
    problems: list[str] = []
    weights: dict[str, int] = {}  # model → bytes on the device

    needed = Assembly(cfg).method().weights()
    for sam in (w for w in needed if isinstance(w, SamWeights)):
        try:
            path = check_checkpoint(sam.model_type, sam.checkpoint, sam.key)
        except RimBenchError as e:
            problems.append(str(e))
            continue
        _, verdict = released_checkpoint(path)
        notes.append(f"{sam.key}.checkpoint: {path} ({sam.model_type}): {verdict}")
        weights[f"SAM {sam.model_type}"] = path.stat().st_size

    for file in (w for w in needed if isinstance(w, FileWeights)):
        path = Path(file.path).expanduser()
        problem = f"{file.key}: no file '{file.path}' ({file.what})" if not path.is_file() else \
            file.check(path) if file.check is not None else None
        if problem:
            problems.append(problem)
        else:
            notes.append(f"{file.key}: {path} ({path.stat().st_size / GB:.2f} GB)")
            weights[str(path)] = path.stat().st_size

    half = device.type == "cuda"  # Stable Diffusion runs in fp16 on CUDA
    for hub in (w for w in needed if isinstance(w, HubWeights)):
        problem, note, size = check_hub_model(hub.key, hub.model, hub.marker)
        if problem:
            problems.append(problem)
        else:
            notes.append(note)
            if size:
                weights[hub.model] = size // 2 if half and hub.key.startswith("references.") else size

    if device.type == "cuda" and not problems:
        problem = check_gpu_memory(weights, gpu_memory_bytes())
        if problem:
            problems.append(problem)
    return notes, problems


def require_weights(configs: list[DictConfig]) -> None:
    """The checks of `check_weights` for the long commands (`test`, `build-bank`, `sweep`, `suite`),
    before any data is read or model loaded: a one-line `ConfigError` naming every problem of
    `configs` (each once; configs that declare the same weights are checked once)."""
    problems: dict[str, None] = {}  # ordered, without repeats
    checked = set()
    for cfg in configs:
        device = build_device(cfg)
        needed = (device.type, *Assembly(cfg).method().weights())
        if needed not in checked:
            checked.add(needed)
            problems.update(dict.fromkeys(check_weights(cfg, device)[1]))
    if len(problems) == 1:
        raise ConfigError(next(iter(problems)))
    if problems:
        raise ConfigError(f"{len(problems)} problems with the weights, nothing was loaded: " + "; ".join(problems))


def check_hub_model(key: str, model: str, marker: str) -> tuple[str | None, str, int]:
    """A problem (or None), a note, and the weights' size in bytes (0 when unknown) of one model
    (a folder holding `marker` when loadable)."""
    from rim_bench.stages.backbones.hub import cached_snapshot, hub_offline, hub_unreachable, is_local

    if is_local(model):
        folder = Path(model).expanduser()
        if not (folder / marker).is_file():
            return (f"{key}: '{model}' is not a model folder (no {marker} in it); give a hub id or a folder "
                    "saved with save_pretrained / downloaded with `hf download ID --local-dir DIR`"), "", 0
        size = weights_size(folder)
        return None, f"{key}: {folder} (local folder, {size / GB:.2f} GB)", size
    snapshot = cached_snapshot(model, marker)
    if snapshot is None:
        why = "HF_HUB_OFFLINE is set" if hub_offline() else None
        if why is None and (unreachable := hub_unreachable()):
            why = f"the hub cannot be reached ({unreachable})"
        if why:
            return (f"{key}: '{model}' is not in the local hub cache and {why}: run "
                    f"`hf download {model}` where there is a network (see docs/weights.md), or pass a local "
                    "folder"), "", 0
        return None, f"{key}: '{model}' is not in the local hub cache: it downloads on first load", 0
    size = weights_size(snapshot)
    return None, f"{key}: '{model}' (hub cache, {size / GB:.2f} GB)", size


def weights_size(folder: Path) -> int:
    """Bytes of a model folder's weight files (safetensors preferred, as the loaders do)."""
    files = list(folder.rglob("*.safetensors")) or list(folder.rglob("*.bin"))
    return sum(f.stat().st_size for f in files)


def gpu_memory_bytes() -> int:
    """The first CUDA device's total memory."""
    return int(torch.cuda.get_device_properties(0).total_memory)


def check_gpu_memory(weights: dict[str, int], total: int) -> str | None:
    """A problem line when the weights plus working memory exceed the GPU, else None."""
    need = sum(weights.values()) + GPU_HEADROOM_BYTES
    if need <= total:
        return None
    parts = " + ".join(f"{name} {size / GB:.1f}" for name, size in weights.items())
    return (f"trainer: the GPU has {total / GB:.1f} GB but these settings need about {need / GB:.1f} GB "
            f"({parts} + {GPU_HEADROOM_BYTES / GB:.1f} working, GB): use smaller models "
            "(proposer.sam.model_type=vit_b, featurizer.dinov2.model=facebook/dinov2-small) or a larger GPU")


@dataclass
class Download:
    """A model a run needs that is not here yet: `name` (a file or a hub id), its size in bytes (None:
    not listed in rim_bench/core/downloads.yaml) and where that number comes from, the config keys that
    name it, and where it goes (`place`, with ``{keys}``: the keys, each as ``KEY=`` `value`)."""

    name: str
    size: int | None
    size_source: str
    place: str
    value: str = "PATH"
    keys: list[str] = field(default_factory=list)

    @property
    def goes(self) -> str:
        return self.place.format(keys=" and ".join(f"{key}={self.value}" for key in self.keys))


def missing_downloads(cfg: DictConfig) -> list[Download]:
    """The weights `cfg` needs that are neither on disk nor in the local hub cache, each once (SAM's file
    serves the proposer and the references alike), with its listed size and where it goes."""
    from huggingface_hub import constants

    from rim_bench.stages.backbones.hub import cached_snapshot, is_local
    from rim_bench.stages.backbones.sam import RELEASES

    found: dict[str, Download] = {}
    for needed in Assembly(cfg).method().weights():
        download: Download | None = None
        if isinstance(needed, SamWeights):
            key = f"{needed.key}.checkpoint"
            if not (needed.checkpoint and Path(needed.checkpoint).expanduser().is_file()):
                release = RELEASES[needed.model_type]
                download = Download(release.file, release.bytes, "rim_bench/core/downloads.yaml (exact)",
                                    f"any folder, passed as {{keys}} ({release.url})")
        elif isinstance(needed, HubWeights):
            key = needed.key
            if is_local(needed.model):
                if not (Path(needed.model).expanduser() / needed.marker).is_file():
                    download = Download(needed.model, None, "not listed", f"the folder {needed.model} "
                                        "(`hf download ID --local-dir` it; {keys})", value=needed.model)
            elif cached_snapshot(needed.model, needed.marker) is None:
                size, source = hub_size(needed.model) or (None, "not listed in rim_bench/core/downloads.yaml")
                download = Download(needed.model, size, source, f"the hub cache, {constants.HF_HUB_CACHE} "
                                    f"(`hf download {needed.model}`; HF_HOME moves it), or a folder given as {{keys}}",
                                    value="DIR")
        else:
            key = needed.key
            path = Path(needed.path).expanduser()
            if not path.is_file():
                download = Download(needed.path, None, "not listed", f"a file given as {{keys}} ({needed.what})")
        if download is not None:
            found.setdefault(download.name, download).keys.append(key)
    return list(found.values())


def format_downloads(downloads: list[Download]) -> str:
    """The downloads a run still needs, one line each with its size and where it goes, and their total."""
    lines = ["downloads this run needs (nothing was loaded; docs/weights.md says how):"]
    for d in downloads:
        size = f"{d.size / GB:.2f} GB" if d.size is not None else "size not listed"
        lines.append(f"  {d.name} ({', '.join(d.keys)}): {size} → {d.goes}")
    listed = [d.size for d in downloads if d.size is not None]
    unlisted = len(downloads) - len(listed)
    if listed:
        lines.append(f"  total {sum(listed) / GB:.2f} GB" + (f", and {unlisted} of unlisted size" if unlisted else ""))
    return "\n".join(lines)
