"""A tiny synthetic segmentation benchmark for offline smoke tests.

`generate_smoke` draws a deterministic set of images in the PASCAL VOC on-disk layout,
so the whole pipeline (superpixels, features, region-to-exemplar matching, mIoU) can run
end to end on a CPU in seconds. It checks that the pieces fit together and that
matching carries signal; it is not a measure of the method.

Each object class owns one hue family, and each of its three subcategories is a
different texture and shade inside that family (e.g. yellow stripes vs orange dots), so
"several visual subcategories per class" is real. The background is a low-saturation
distractor (grey noise, brown gradient, beige clutter) that no class colour collides with.

Layout written under `root`::

    JPEGImages/<id>.jpg                  RGB test image, size about `image_size` (+-16 px)
    SegmentationClass/<id>.png           mode "P", VOC palette; class ids, 255 = ignore
    ImageSets/Segmentation/val.txt       the ids ("smoke_0000", ...), sorted, one a line
    exemplars/<class>/<subcategory>/<k>.jpg       one object of that subcategory
    exemplars/<class>/<subcategory>/<k>_mask.png  mode "L", 255 = object, 0 elsewhere
    DONE                                 json: version and generation parameters

Class ids are the line numbers of `classes/smoke.txt` (0 = background). Background
exemplars are pure background texture with an all-255 mask.
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rim_bench.core.io import remove_stale
from rim_bench.data.palette import voc_palette

SMOKE_VERSION: int = 1


@dataclass(frozen=True)
class _Style:
    """How one subcategory looks: a texture kind blending colour `a` (t=0) into `b` (t=1).

    Colours are HSV triples: hue in degrees, saturation and value in [0, 1].
    """

    kind: str
    a: tuple[float, float, float]
    b: tuple[float, float, float]


# Hue families: berry ~335-10, sun ~30-58, leaf ~85-140, sea ~185-230, grape ~265-300.
# Background stays at saturation <= 0.25 so it never reads as a class colour.
_STYLES: dict[str, dict[str, _Style]] = {
    "background": {
        "grey noise": _Style("mottle", (0, 0.0, 0.32), (0, 0.0, 0.72)),
        "brown gradient": _Style("gradient", (28, 0.25, 0.30), (35, 0.15, 0.65)),
        "beige clutter": _Style("clutter", (40, 0.12, 0.78), (20, 0.10, 0.45)),
    },
    "sun": {
        "yellow stripes": _Style("stripes", (56, 0.90, 0.95), (46, 0.75, 0.70)),
        "orange dots": _Style("dots", (30, 0.90, 0.95), (48, 0.55, 1.00)),
        "gold checker": _Style("checker", (42, 0.85, 0.82), (50, 0.60, 0.55)),
    },
    "leaf": {
        "lime stripes": _Style("stripes", (85, 0.80, 0.88), (110, 0.70, 0.55)),
        "dark green solid": _Style("solid", (130, 0.80, 0.40), (120, 0.70, 0.55)),
        "mint dots": _Style("dots", (140, 0.45, 0.82), (120, 0.85, 0.45)),
    },
    "sea": {
        "blue waves": _Style("waves", (215, 0.85, 0.88), (200, 0.60, 0.55)),
        "navy checker": _Style("checker", (230, 0.85, 0.45), (220, 0.65, 0.75)),
        "cyan gradient": _Style("gradient", (185, 0.80, 0.90), (200, 0.85, 0.55)),
    },
    "berry": {
        "red solid": _Style("solid", (0, 0.90, 0.80), (355, 0.85, 0.60)),
        "crimson stripes": _Style("stripes", (350, 0.85, 0.60), (5, 0.75, 0.92)),
        "pink dots": _Style("dots", (335, 0.50, 0.95), (345, 0.90, 0.60)),
    },
    "grape": {
        "purple checker": _Style("checker", (280, 0.70, 0.55), (270, 0.50, 0.85)),
        "violet waves": _Style("waves", (265, 0.60, 0.90), (285, 0.80, 0.50)),
        "plum gradient": _Style("gradient", (300, 0.70, 0.35), (290, 0.50, 0.72)),
    },
}

SUBCATEGORIES: dict[str, list[str]] = {c: list(subs) for c, subs in _STYLES.items()}


def _class_names_from_package() -> tuple[str, ...]:
    """First name of each line of `classes/smoke.txt`; the line index is the class id."""
    text = (resources.files("rim_bench.data") / "classes" / "smoke.txt").read_text("utf-8")
    return tuple(line.split(",")[0].strip() for line in text.splitlines() if line.strip())


CLASS_NAMES: tuple[str, ...] = _class_names_from_package()
if list(CLASS_NAMES) != list(SUBCATEGORIES):
    raise RuntimeError(
        f"classes/smoke.txt lists {list(CLASS_NAMES)} but smoke.py styles "
        f"{list(SUBCATEGORIES)}; keep them in the same order"
    )

_NOISE_SIGMA = 6.0  # per-pixel noise (uint8 units), so no two pixels are identical
_SIZE_JITTER = 16  # test images vary by up to this many pixels in H and W
_IGNORE = 255


# --- label post-processing -------------------------------------------------


def _ignore_band(label: np.ndarray) -> np.ndarray:
    """Set to 255 every pixel whose 5x5 neighbourhood holds more than one label.

    That marks a band 2 px deep on each side of every boundary, like VOC's
    uncertain outlines. `label` is `(H, W) uint8`; returns a new `(H, W) uint8`.
    """
    h, w = label.shape
    padded = np.pad(label, 2, mode="edge")  # the frame edge is not a boundary
    lo = label.copy()
    hi = label.copy()
    for dy in range(5):
        for dx in range(5):
            window = padded[dy : dy + h, dx : dx + w]
            np.minimum(lo, window, out=lo)
            np.maximum(hi, window, out=hi)
    out = label.copy()
    out[lo != hi] = _IGNORE
    return out


# --- textures: each returns a blend weight t, (H, W) float32 in [0, 1] -------------------


def _rotated_coords(h: int, w: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by `angle` (radians): two `(H, W) float32` arrays."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return xx * c + yy * s, -xx * s + yy * c


def _stripes(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Hard-edged stripes at a random angle, period 8-16 px."""
    u, _ = _rotated_coords(h, w, rng.uniform(0, np.pi))
    period = rng.uniform(8, 16)
    return ((u / period + rng.uniform()) % 1.0 < 0.5).astype(np.float32)


def _waves(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Soft sinusoidal bands at a random angle, period 10-20 px."""
    u, _ = _rotated_coords(h, w, rng.uniform(0, np.pi))
    period = rng.uniform(10, 20)
    return 0.5 + 0.5 * np.sin(2 * np.pi * (u / period + rng.uniform())).astype(np.float32)


def _dots(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Round dots on a rotated grid, spacing 8-14 px, radius 25-38% of the spacing."""
    u, v = _rotated_coords(h, w, rng.uniform(0, np.pi / 2))
    spacing = rng.uniform(8, 14)
    fu = (u / spacing + rng.uniform()) % 1.0 - 0.5
    fv = (v / spacing + rng.uniform()) % 1.0 - 0.5
    radius = rng.uniform(0.25, 0.38)
    return (fu * fu + fv * fv < radius * radius).astype(np.float32)


def _checker(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A checkerboard at a random angle, cells 6-12 px."""
    u, v = _rotated_coords(h, w, rng.uniform(0, np.pi / 2))
    cell = rng.uniform(6, 12)
    parity = np.floor(u / cell + rng.uniform()) + np.floor(v / cell + rng.uniform())
    return (parity % 2).astype(np.float32)


def _smooth_noise(h: int, w: int, rng: np.random.Generator, cell: int) -> np.ndarray:
    """Low-frequency noise: a coarse random grid (one value per `cell` px), upsampled bicubic."""
    coarse = rng.random((h // cell + 2, w // cell + 2), dtype=np.float32)
    img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    t = np.asarray(img, dtype=np.float32)
    return (t - t.min()) / max(float(t.max() - t.min()), 1e-6)


def _mottle(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Blotchy noise at 12-24 px scale (the grey background)."""
    return _smooth_noise(h, w, rng, cell=int(rng.integers(12, 25)))


def _solid(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Mostly colour `a`, with faint blotches towards `b` so it is not flat."""
    return 0.35 * _smooth_noise(h, w, rng, cell=16)


def _gradient(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A slow triangle-wave ramp along a random direction, half-period 40-80% of the short side.

    A repeating ramp (not one ramp over the frame) so a small object still shows most of it.
    """
    u, _ = _rotated_coords(h, w, rng.uniform(0, 2 * np.pi))
    half = rng.uniform(0.4, 0.8) * min(h, w)
    return np.abs((u / half + rng.uniform(0, 2)) % 2.0 - 1.0)


def _clutter(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Faint scattered rectangles, ellipses and lines at random grey levels (a busy backdrop)."""
    img = Image.new("L", (w, h), 128)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(15, 31))):
        x0, y0 = rng.uniform(-10, w), rng.uniform(-10, h)
        x1, y1 = x0 + rng.uniform(4, 40), y0 + rng.uniform(4, 40)
        level = int(rng.integers(0, 256))
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=level)
        elif kind == 1:
            draw.ellipse((x0, y0, x1, y1), fill=level)
        else:
            draw.line((x0, y0, x1, y1), fill=level, width=int(rng.integers(1, 4)))
    return np.asarray(img, dtype=np.float32) / 255.0


_TEXTURES: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "stripes": _stripes,
    "waves": _waves,
    "dots": _dots,
    "checker": _checker,
    "mottle": _mottle,
    "solid": _solid,
    "gradient": _gradient,
    "clutter": _clutter,
}


# --- colour and shapes ---------------------------------------------------------------


def _jittered_rgb(hsv: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """An HSV colour nudged a little (hue +-4 deg, s and v +-0.05), as `(3,) float32` in 0..255.

    The nudge makes each instance a slightly different shade, so exemplars never
    match test objects pixel for pixel.
    """
    h, s, v = hsv
    h = (h + rng.uniform(-4, 4)) % 360 / 360
    s = float(np.clip(s + rng.uniform(-0.05, 0.05), 0, 1))
    v = float(np.clip(v + rng.uniform(-0.05, 0.05), 0, 1))
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255


def _render_style(style: _Style, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """One instance of a subcategory's look filling the frame: `(H, W, 3) float32`, 0..255."""
    t = _TEXTURES[style.kind](h, w, rng)[..., None]
    a, b = _jittered_rgb(style.a, rng), _jittered_rgb(style.b, rng)
    return a * (1 - t) + b * t


def _shape_mask(
    h: int, w: int, rng: np.random.Generator, radius: float, center: tuple[float, float]
) -> np.ndarray:
    """A filled ellipse, rectangle or star-convex polygon, randomly rotated: `(H, W) bool`.

    `radius` is the larger half-extent in px; the other is 60-100% of it.
    `center` is (x, y).
    """
    cx, cy = center
    rx, ry = radius, radius * rng.uniform(0.6, 1.0)
    kind = rng.integers(3)
    if kind == 0:  # ellipse, as a polygon so it can be rotated
        theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        px, py = rx * np.cos(theta), ry * np.sin(theta)
    elif kind == 1:  # rectangle
        px, py = np.array([-rx, rx, rx, -rx]), np.array([-ry, -ry, ry, ry])
    else:  # random polygon: jittered but ordered angles, so it is a blob, not a sliver
        n = int(rng.integers(5, 9))
        theta = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n)
        r = rng.uniform(0.6, 1.0, n)
        px, py = rx * r * np.cos(theta), ry * r * np.sin(theta)
    rot = rng.uniform(0, np.pi)
    c, s = np.cos(rot), np.sin(rot)
    xs, ys = cx + px * c - py * s, cy + px * s + py * c
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in zip(xs, ys)], fill=255)
    return np.asarray(img) > 0


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add per-pixel noise and quantise: `(H, W, 3) float32` -> `(H, W, 3) uint8`."""
    noise = rng.normal(0, _NOISE_SIGMA, canvas.shape).astype(np.float32)
    return np.clip(np.rint(canvas + noise), 0, 255).astype(np.uint8)


def _random_background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random background subcategory filling the frame: `(H, W, 3) float32`."""
    styles = list(_STYLES["background"].values())
    return _render_style(styles[rng.integers(len(styles))], h, w, rng)


# --- images ----------------------------------------------------------------------------


def _test_image(
    h: int, w: int, classes: list[int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A background with one object per entry of `classes` (ids >= 1), later ones on top.

    Returns the image `(H, W, 3) uint8` and its label `(H, W) uint8` (ids, 255 = ignore).
    """
    canvas = _random_background(h, w, rng)
    label = np.zeros((h, w), np.uint8)
    short = min(h, w)
    for cls in classes:
        subs = list(_STYLES[CLASS_NAMES[cls]].values())
        style = subs[rng.integers(len(subs))]
        center = (rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h)
        mask = _shape_mask(h, w, rng, rng.uniform(0.15, 0.45) * short, center)
        canvas[mask] = _render_style(style, h, w, rng)[mask]
        label[mask] = cls
    return _finish(canvas, rng), _ignore_band(label)


def _exemplar(
    cls: int, style: _Style, h: int, w: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One whole object of `style` on a random background (class 0: background only).

    Returns the image `(H, W, 3) uint8` and its mask `(H, W) uint8` (255 = object).
    """
    if cls == 0:
        image = _render_style(style, h, w, rng)
        return _finish(image, rng), np.full((h, w), 255, np.uint8)
    canvas = _random_background(h, w, rng)
    radius = rng.uniform(0.3, 0.45) * min(h, w)
    # Keep the centre at least `radius` from the frame so the whole object is visible.
    center = (rng.uniform(radius, w - radius), rng.uniform(radius, h - radius))
    mask = _shape_mask(h, w, rng, radius, center)
    canvas[mask] = _render_style(style, h, w, rng)[mask]
    return _finish(canvas, rng), mask.astype(np.uint8) * 255


def _class_sequence(n: int, rng: np.random.Generator) -> list[int]:
    """`n` object class ids from back-to-back shuffles of 1..C-1, so every class is used."""
    ids: list[int] = []
    while len(ids) < n:
        ids += [int(i) for i in rng.permutation(np.arange(1, len(CLASS_NAMES)))]
    return ids[:n]


def _write_test_images(
    out: Path, num_images: int, image_size: tuple[int, int], rng: np.random.Generator
) -> None:
    """JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/val.txt under `out`."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (out / sub).mkdir(parents=True)
    counts = rng.integers(1, 4, num_images)
    classes = _class_sequence(int(counts.sum()), rng)
    palette = voc_palette()
    ids = []
    start = 0
    for i, count in enumerate(counts):
        h, w = (int(s + rng.integers(-_SIZE_JITTER, _SIZE_JITTER + 1)) for s in image_size)
        image, label = _test_image(h, w, classes[start : start + count], rng)
        start += count
        image_id = f"smoke_{i:04d}"
        ids.append(image_id)
        Image.fromarray(image).save(out / "JPEGImages" / f"{image_id}.jpg", quality=95)
        png = Image.fromarray(label)
        png.putpalette(palette)  # turns the "L" image into "P"
        png.save(out / "SegmentationClass" / f"{image_id}.png")
    (out / "ImageSets/Segmentation/val.txt").write_text("".join(f"{i}\n" for i in sorted(ids)))


def _write_exemplars(
    out: Path, per_subcategory: int, image_size: tuple[int, int], rng: np.random.Generator
) -> None:
    """exemplars/<class>/<subcategory>/<k>.jpg and <k>_mask.png under `out`."""
    h, w = image_size
    for cls, name in enumerate(CLASS_NAMES):
        for sub, style in _STYLES[name].items():
            folder = out / "exemplars" / name / sub
            folder.mkdir(parents=True)
            for k in range(per_subcategory):
                image, mask = _exemplar(cls, style, h, w, rng)
                Image.fromarray(image).save(folder / f"{k}.jpg", quality=95)
                Image.fromarray(mask).save(folder / f"{k}_mask.png")


# --- entry point -----------------------------------------------------------------------


def _is_complete(root: Path, params: dict) -> bool:
    """Whether `root/DONE` exists and records exactly `params`."""
    try:
        return json.loads((root / "DONE").read_text()) == params
    except (OSError, ValueError):
        return False


def generate_smoke(
    root: str | os.PathLike,
    num_images: int = 24,
    seed: int = 0,
    image_size: tuple[int, int] = (128, 160),
    exemplars_per_subcategory: int = 2,
) -> Path:
    """Write the smoke benchmark under `root` (layout in the module docstring); return root.

    Idempotent: when `root/DONE` records this version and these arguments, returns at
    once. Same arguments give byte-identical files. Everything is built in a temporary
    sibling directory and renamed into place, so a crash never leaves a half-written
    `root`. `image_size` is (H, W); test images vary around it by up to 16 px, exemplars
    have exactly that size. Test images and exemplars use separate random streams.

    Raises:
        ValueError: an argument is out of range.
        FileExistsError: `root` exists, is not empty and is not this smoke set.
    """
    root = Path(root)
    h, w = (int(s) for s in image_size)
    if num_images < 1 or exemplars_per_subcategory < 1:
        raise ValueError(
            f"num_images ({num_images}) and exemplars_per_subcategory "
            f"({exemplars_per_subcategory}) must be at least 1"
        )
    if min(h, w) < 2 * _SIZE_JITTER + 16:
        raise ValueError(f"image_size {image_size} is too small; use at least 48 x 48")
    params = {
        "version": SMOKE_VERSION,
        "num_images": int(num_images),
        "seed": int(seed),
        "image_size": [h, w],
        "exemplars_per_subcategory": int(exemplars_per_subcategory),
    }
    if _is_complete(root, params):
        return root
    # An empty directory (e.g. made by a caller) is safe to replace; anything else is not ours.
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} exists but is not a complete smoke benchmark with {params}; "
            f"delete it and run again"
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    # A generation killed midway leaves its temporary folder; one an hour old is not running.
    remove_stale(root.parent, f".{root.name}.*.tmp")
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the data set is meant to be shared
        _write_test_images(tmp, num_images, (h, w), np.random.default_rng([seed, 0]))
        _write_exemplars(tmp, exemplars_per_subcategory, (h, w), np.random.default_rng([seed, 1]))
        (tmp / "DONE").write_text(json.dumps(params) + "\n")
        try:
            os.replace(tmp, root)  # atomic; fails if another process filled `root` first
        except OSError:
            if not _is_complete(root, params):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root
