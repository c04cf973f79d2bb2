"""The per-pixel methods (``pixel.name``, read when ``pipeline: pixel``): ``clip`` labels every pixel
with a peer's method on an OpenAI CLIP (`PixelSegmenter`), its settings declared here once and set
per benchmark by the method files (``method=sclip`` etc., configs/method/)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import torch

from rim_bench.core.cache_files import file_digest
from rim_bench.core.errors import ConfigError, ParamError
from rim_bench.core.params import GIVEN, POSITIVE, FileWeights, HubWeights, Range, SamWeights, ref
from rim_bench.core.registry import PIXEL_METHODS
from rim_bench.stages.backbones.openai_clip import (
    Architecture,
    BpeTokenizer,
    OpenAIClip,
    clip_file_problem,
    find_bpe,
    load_openai_clip,
    random_state_dict,
)
from rim_bench.stages.pixel.protocol import PixelSettings
from rim_bench.stages.pixel.proxyclip import Proxy, load_proxy
from rim_bench.stages.pixel.segment import PixelSegmenter, in_dtype, run_dtype
from rim_bench.stages.pixel.text import CLASSES_DIR, read_class_file

# The "tiny" model: a random OpenAI-format CLIP whose tokenizer needs no BPE file (a token per byte).
TINY: dict[str, Any] = {"width": 64, "layers": 2, "patch": 16, "grid": 14, "embed_dim": 32, "context": 77,
                        "text_width": 64, "text_layers": 1, "seed": ref("${seed}")}
PAMR_DILATIONS = [8, 16]
# ProxyCLIP's "tiny" proxy: a random ViT (pretraining grid x patch pixels; SAM's tiny model takes the seed alone).
PROXY_TINY: dict[str, Any] = {"width": 128, "layers": 2, "patch": 8, "grid": 8, "seed": ref("${seed}")}


def proxy_weights(kind: str, model: str, key: str) -> FileWeights | HubWeights | SamWeights:
    """ProxyCLIP's proxy model to check before a run."""
    if kind == "sam":
        return SamWeights(key, "vit_b", model)
    if kind == "dinov2":
        return HubWeights(key, model)
    if Path(model).expanduser().is_dir():  # DINO in a transformers folder
        return HubWeights(key, model, "model.safetensors")
    return FileWeights(key, model, "DINO's checkpoint: dino_vitbase8_pretrain.pth, github.com/facebookresearch/dino")


@PIXEL_METHODS.register("clip")
class ClipPixelMethod:
    """A peer's training-free per-pixel method on OpenAI CLIP weights.

    Args:
        method: the last block's form (`rim_bench.stages.pixel.segment.LAST_BLOCKS`).
        model: an OpenAI CLIP file (``ViT-B-16.pt``: TorchScript archive or state dict; the
            architecture is read from its shapes), or ``"tiny"`` (random, `tiny`'s sizes).
        bpe: CLIP's BPE merges file; null: found as `find_bpe` finds it (not needed for tiny).
        classes: the peer's class file (under rim_bench/stages/pixel/classes/, or a path), one
            class a line, names split on `separator`; null: the run's vocabulary and synonyms.
        short_side .. gamma: `PixelSettings`. chunk: windows per forward.
        proxy_model: ProxyCLIP's proxy (`load_proxy`): DINO's checkpoint ``dino_vitbase8_pretrain.pth``
            or ``facebook/dino-vitb8`` saved with save_pretrained (``proxy: dino``), a hub id or folder
            (``dinov2``), a SAM ViT-B checkpoint (``sam``), or ``"tiny"`` (random, `proxy_tiny`'s
            sizes); not read by the other methods.
        source: the peer's config file the values come from (recorded with the result).
        vocabulary: the run's classes, ``[[name, synonym, ...], ...]`` (given by the code).
        text_dir: where the text embeddings are cached (given by the code: `CacheLayout.text_dir`).
        precision: ``trainer.precision`` (given by the code); null: the peer's own, float16 on
            CUDA, float32 elsewhere (`rim_bench.stages.pixel.segment.run_dtype`).
    """

    @classmethod
    def weights(cls, params: dict, key: str) -> list[FileWeights | HubWeights | SamWeights]:
        """The OpenAI CLIP file (and ProxyCLIP's proxy) to check before a run (none for ``tiny``)."""
        found: list[FileWeights | HubWeights | SamWeights] = []
        if params["model"] != "tiny":
            found.append(FileWeights(f"{key}.model", params["model"], "the OpenAI CLIP file the clip package "
                                     "downloads, e.g. ViT-B-16.pt: give it as featurizer.clip.model=PATH",
                                     check=clip_file_problem))
        proxy_model = params.get("proxy_model", "tiny")
        if params.get("method") == "proxyclip" and proxy_model != "tiny":
            found.append(proxy_weights(params.get("proxy", "dino"), proxy_model, f"{key}.proxy_model"))
        return found

    def __init__(self, method: Literal["maskclip", "sclip", "naclip", "clearclip", "proxyclip"] = "sclip",
                 model: str = "ViT-B-16.pt", bpe: str | None = None, classes: str | None = None,
                 separator: str = ", ", short_side: Annotated[int, Range(1)] = 336,
                 crop: Annotated[int, Range(0)] = 224, stride: Annotated[int, Range(1)] = 112,
                 logit_scale: Annotated[float, POSITIVE] = 40.0, prob_thd: Annotated[float, Range(0, 1)] = 0.0,
                 area_thd: Annotated[float, Range(0, 1)] | None = None, pamr_steps: Annotated[int, Range(0)] = 0,
                 pamr_dilations: list = PAMR_DILATIONS, pad_to_patch: bool = False,
                 gaussian_std: Annotated[float, POSITIVE] = 5.0, pad_multiple: Annotated[int, Range(0)] = 0,
                 proxy: Literal["dino", "dinov2", "sam"] = "dino", proxy_model: str = "dino_vitbase8_pretrain.pth",
                 beta: Annotated[float, Range(0)] = 1.2, gamma: Annotated[float, POSITIVE] = 3.0,
                 chunk: Annotated[int, Range(1)] = 16,
                 source: str = "", tiny: dict = TINY, proxy_tiny: dict = PROXY_TINY,
                 text_dir: Annotated[Path | None, GIVEN] = None,
                 precision: Annotated[str | int | None, GIVEN] = None) -> None:
        if model == "tiny":
            arch = Architecture(vocab=len(BpeTokenizer(None)), **{k: v for k, v in tiny.items() if k != "seed"})
            self.model = OpenAIClip(arch)
            self.model.load_state_dict(random_state_dict(arch, seed=int(tiny.get("seed", 0))))
            self.model.eval().requires_grad_(False)
            self.tokenizer = BpeTokenizer(None)
            self.model_key = "tiny-" + hashlib.sha256(json.dumps(tiny, sort_keys=True).encode()).hexdigest()[:16]
        else:
            self.model = load_openai_clip(Path(model).expanduser())
            self.tokenizer = BpeTokenizer(find_bpe(bpe))
            self.model_key = file_digest(Path(model).expanduser())
        if not all(isinstance(d, int) and d > 0 for d in pamr_dilations):
            raise ParamError("pamr_dilations", f"must be a list of positive ints, got {pamr_dilations!r}")
        self.settings = PixelSettings(method, classes or "", separator, short_side, crop, stride, logit_scale,
                                      prob_thd, area_thd, pamr_steps, tuple(pamr_dilations), pad_to_patch,
                                      gaussian_std, pad_multiple, proxy, beta, gamma, source)
        self.proxy: Proxy | None = load_proxy(proxy, proxy_model, proxy_tiny) if method == "proxyclip" else None
        self.classes_file = classes
        self.chunk = chunk
        self.text_dir = text_dir
        self.precision = precision

    @property
    def module(self) -> torch.nn.Module:
        """The weights (to move to a device): CLIP's, and the proxy's for ProxyCLIP."""
        return self.model if self.proxy is None else torch.nn.ModuleList([self.model, self.proxy])

    def for_vocabulary(self, vocabulary: list[list[str]]) -> PixelSegmenter:
        """The segmenter for `vocabulary` (label id i = its i-th class), its names' text embedded,
        the model in the dtype it runs in on its device (`run_dtype`)."""
        names, query_class = self.query_names(vocabulary)
        dtype = run_dtype(self.model.visual.conv1.weight.device.type, self.precision)
        in_dtype(self.model, dtype)
        if self.proxy is not None and dtype != torch.float32:  # ProxyCLIP runs its proxy in CLIP's half precision
            self.proxy.to(dtype)
        return PixelSegmenter(self.model, self.tokenizer, self.settings, self.model_key, self.text_dir, names,
                              query_class, self.chunk, self.proxy)

    def query_names(self, vocabulary: list[list[str]]) -> tuple[list[str], list[int]]:
        """The query names and the class of each: the peer's class file's when one is set (its
        line count must equal the vocabulary's), else the vocabulary's names and synonyms."""
        if self.classes_file:
            path = Path(self.classes_file).expanduser()
            path = path if path.is_file() else CLASSES_DIR / self.classes_file
            names, query_class = read_class_file(path, self.settings.separator)
            lines = max(query_class) + 1
            if lines != len(vocabulary):
                raise ConfigError(f"pixel.clip.classes: '{path}' has {lines} classes, the benchmark {len(vocabulary)}: "
                                  f"give the class file of this benchmark (or null: the benchmark's own names)")
        else:
            names = [name for line in vocabulary for name in line]
            query_class = [i for i, line in enumerate(vocabulary) for _ in line]
        return names, query_class

