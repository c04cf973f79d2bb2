"""Segment Anything: the only module that imports segment_anything.

`load_sam` builds ``vit_h`` / ``vit_l`` / ``vit_b`` from a checkpoint file through
segment-anything's own `sam_model_registry`, or ``"tiny"``: a random-init SAM with a
2-layer image encoder at 256 px that runs in well under a second on a CPU. Before
building, it checks that the checkpoint is readable and holds the image encoder that
``model_type`` names (`checkpoint_model_type`); `released_checkpoint` says which
released file a checkpoint is, by its size (and, on request, its MD5).
"""

from __future__ import annotations

import hashlib
import math
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from rim_bench.core.downloads import download_sizes
from rim_bench.core.errors import ConfigError

MODEL_TYPES = ("vit_h", "vit_l", "vit_b")
# The image encoder's width per model type (segment_anything/build_sam.py: encoder_embed_dim).
ENCODER_WIDTH = {"vit_h": 1280, "vit_l": 1024, "vit_b": 768}
_PATCH_EMBED = "image_encoder.patch_embed.proj.weight"  # (width, 3, 16, 16)


@dataclass(frozen=True)
class Release:
    """A checkpoint Meta released (links in segment-anything's README, "Model Checkpoints")."""

    file: str
    bytes: int
    md5: str  # the 6 hex digits in the file name are its start

    @property
    def url(self) -> str:
        return f"https://dl.fbaipublicfiles.com/segment_anything/{self.file}"


# Meta's releases: file, size and MD5 are kept in rim_bench/core/downloads.yaml (sources there; see docs/weights.md).
RELEASES = {model_type: Release(**release) for model_type, release in download_sizes()["sam"].items()}


# Models loaded and still in use, by what made them: the region proposer and the references'
# prompted SAM share one model when their settings agree (ViT-H is 2.5 GB in fp32).
_LOADED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def load_sam(model_type: str, checkpoint: str | None, seed: int, device: torch.device | str, key: str) -> Sam:
    """SAM in eval mode on `device`; the same object again while one made alike is in use there.

    Args:
        model_type: ``vit_h``, ``vit_l``, ``vit_b`` or ``tiny``.
        checkpoint: the ``.pth`` file for the real models (e.g. ``sam_vit_h_4b8939.pth``).
        seed: initialises the ``tiny`` model.
        key: the config block that holds these values, for error messages (``proposer.sam``).
    """
    device = torch.device(device)
    made_by = (model_type, str(Path(checkpoint).expanduser().resolve()) if checkpoint else None,
               seed if model_type == "tiny" else None, str(device))
    loaded = _LOADED.get(made_by)
    if loaded is not None and next(loaded.parameters()).device == device:  # not moved since (Lightning does)
        return loaded
    if model_type == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sam = _tiny_sam()
    else:
        path = check_checkpoint(model_type, checkpoint, key)
        sam = sam_model_registry[model_type](checkpoint=str(path))
    sam = sam.to(device).eval()
    _LOADED[made_by] = sam
    return sam


def check_checkpoint(model_type: str, checkpoint: str | None, key: str) -> Path:
    """The checkpoint's path, once it exists and holds a ``model_type`` image encoder; else a
    one-line `ConfigError` (segment-anything itself fails deep in ``load_state_dict``)."""
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"{key}.model_type: unknown '{model_type}' (choose {', '.join(MODEL_TYPES)} or tiny)")
    path = Path(checkpoint).expanduser() if checkpoint else None
    if path is None or not path.is_file():
        release = RELEASES[model_type]
        raise ConfigError(
            f"{key}.checkpoint: SAM checkpoint '{checkpoint}' not found: download {release.file} "
            f"({release.url}, see docs/weights.md) and set {key}.checkpoint=PATH"
        )
    found = checkpoint_model_type(path, key)
    if found != model_type:
        raise ConfigError(
            f"{key}.model_type: '{model_type}' does not fit {path.name}, which holds a {found} image encoder "
            f"({ENCODER_WIDTH[found]} wide); set {key}.model_type={found} or give a {model_type} checkpoint"
        )
    return path


def checkpoint_model_type(path: Path, key: str) -> str:
    """``vit_h`` / ``vit_l`` / ``vit_b`` by the width of the checkpoint's patch embedding.

    The state dict is memory-mapped: only that one tensor is read, in milliseconds even for ViT-H.
    """
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        width = int(state[_PATCH_EMBED].shape[0])
    except Exception as e:  # torch raises several types for a truncated or foreign file
        size = path.stat().st_size
        hint = next((f"; the released {r.file} is {r.bytes:,} B" for r in RELEASES.values() if r.file == path.name), "")
        raise ConfigError(f"{key}.checkpoint: {path} ({size:,} B) is not a readable SAM state dict "
                          f"({type(e).__name__}){hint}: a partial download? Download it again") from None
    by_width = {w: t for t, w in ENCODER_WIDTH.items()}
    if width not in by_width:
        raise ConfigError(f"{key}.checkpoint: {path}'s image encoder is {width} wide, not a SAM ViT-B/L/H")
    return by_width[width]


def released_checkpoint(path: Path, md5: bool = False) -> tuple[Release | None, str]:
    """Which released checkpoint `path` is, by size (and MD5 if asked), and a line saying so."""
    size = path.stat().st_size
    release = next((r for r in RELEASES.values() if r.bytes == size), None)
    if release is None:
        return None, f"{size:,} B: not a released SAM checkpoint (fine for your own or random weights)"
    if not md5:
        return release, f"the size of the released {release.file}"
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    if digest.hexdigest() != release.md5:
        return None, f"the size of {release.file} but not its MD5 ({digest.hexdigest()}): a damaged download"
    return release, f"the released {release.file} (size and MD5)"


def _tiny_sam() -> Sam:
    dim, size, patch = 32, 256, 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=size, patch_size=patch, embed_dim=64, depth=2, num_heads=2, out_chans=dim,
            window_size=4, global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(size // patch, size // patch), input_image_size=(size, size),
            mask_in_chans=8,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=dim,
        ),
    )


class PromptedSegmenter:
    """One mask per box/points prompt: the best of SAM's three by predicted IoU."""

    def __init__(self, sam: Sam) -> None:
        self.predictor = SamPredictor(sam)

    @torch.no_grad()
    def __call__(
        self, image: np.ndarray, box: np.ndarray | None, points: np.ndarray | None
    ) -> tuple[np.ndarray, float]:
        """Segment the prompted object.

        Args:
            image: ``(H, W, 3) uint8`` RGB.
            box: ``(4,)`` x0, y0, x1, y1 in pixels, or None.
            points: ``(P, 2)`` x, y positive points in pixels, or None.
        Returns:
            ``(H, W) bool`` mask and its predicted IoU.
        """
        self.predictor.set_image(image)
        masks, scores, _ = self.predictor.predict(
            point_coords=points, point_labels=None if points is None else np.ones(len(points), dtype=np.int64),
            box=box, multimask_output=True,
        )
        best = int(np.argmax(scores))
        return masks[best].astype(bool), float(scores[best])


def pad_for_resize(image: np.ndarray, long_side: int) -> np.ndarray:
    """``(H, W, 3)`` padded with black below or to the right, if needed, so that SAM's resize of
    the long side to `long_side` keeps a short side of a pixel or more (a 1 x 5000 image
    would become 0 x 1024 and fail inside PIL)."""
    height, width = image.shape[:2]
    short = math.ceil(max(height, width) / long_side)
    if min(height, width) >= short:
        return image
    return np.pad(image, ((0, max(0, short - height)), (0, max(0, short - width)), (0, 0)))
