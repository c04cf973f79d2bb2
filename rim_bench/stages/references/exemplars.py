"""References from the user's own images: one folder per class, one per subcategory.

```
root/<class name>/<subcategory>/<image>.jpg|.jpeg|.png
root/<class name>/<subcategory>/<image>_mask.png     optional; non-zero = the object
```
An image without a mask is pooled over its whole area. Class folders are named by
the first name of each class in the class file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from rim_bench.core.errors import DataError, ParamError
from rim_bench.core.params import Range
from rim_bench.core.protocols import ReferenceSource
from rim_bench.core.registry import REFERENCE_SOURCES
from rim_bench.core.types import BuildContext, ReferenceBank
from rim_bench.data.base import load_rgb, unsafe_id

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = "_mask.png"


@dataclass(frozen=True)
class Exemplar:
    class_id: int
    subcategory: str  # "class/subcategory"
    image: Path
    mask: Path | None


@REFERENCE_SOURCES.register("exemplars")
class ExemplarReferences(ReferenceSource):
    """Reference features pooled from exemplar images (and masks) on disk.

    Args:
        root: the exemplar folder (layout above).
        n_subcategories: use the first K subcategories of each class, sorted by name; null = all.
        images_per_subcategory: use the first N images of each subcategory; null = all.
    """

    uses_synonyms = False  # folders are named by class name: a bank for the same names is the same bank

    def __init__(self, root: str | None = None, n_subcategories: Annotated[int, Range(1)] | None = None,
                 images_per_subcategory: Annotated[int, Range(1)] | None = None) -> None:
        if root is None:
            raise ParamError("root", "not set: give references.exemplars.root=DIR (<DIR>/<class>/<subcategory>/*.jpg)")
        self.root = Path(root).expanduser()
        self.n_subcategories = n_subcategories
        self.images_per_subcategory = images_per_subcategory

    def scan(self, class_names: list[str]) -> list[Exemplar]:
        """List the exemplars to use, in a fixed order; every class must have one."""
        if not self.root.is_dir():
            raise DataError(f"exemplar folder '{self.root}' does not exist (references.exemplars.root)")
        found: list[Exemplar] = []
        for class_id, name in enumerate(class_names):
            class_dir = self._class_dir(name)
            subdirs = sorted(p for p in class_dir.iterdir() if p.is_dir()) if class_dir.is_dir() else []
            subdirs = subdirs[: self.n_subcategories]
            before = len(found)
            for sub in subdirs:
                images = sorted(
                    p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(MASK_SUFFIX)
                )[: self.images_per_subcategory]
                for image in images:
                    mask = image.with_name(image.stem + MASK_SUFFIX)
                    found.append(Exemplar(class_id, f"{name}/{sub.name}", image, mask if mask.is_file() else None))
            if len(found) == before:
                have = sorted(p.name for p in self.root.iterdir() if p.is_dir())
                raise DataError(
                    f"no exemplar images for class '{name}': expected {class_dir}/<subcategory>/<image>.jpg "
                    f"(class folders found: {', '.join(have) or 'none'})"
                )
        return found

    def _class_dir(self, name: str) -> Path:
        """``<root>/<class name>``; a class name that cannot be one folder inside root is a `DataError`."""
        problem = unsafe_id(name) or ("holds a '/'" if "/" in name else None)
        if problem is None:
            try:
                (self.root / name).is_dir()
            except OSError as e:  # e.g. a name longer than the file system allows
                problem = f"is not a valid folder name: {e.strerror}"
        if problem:
            short = name if len(name) <= 60 else name[:57] + "..."
            raise DataError(f"class '{short}' {problem}, so it cannot name an exemplar folder under '{self.root}'; "
                            "rename the class or use other references")
        return self.root / name

    def cache_spec(self, class_names: list[str]) -> dict:
        """The files (with size and modification time) that the bank is built from."""
        files = []
        for ex in self.scan(class_names):
            for path in (ex.image, ex.mask):
                if path is not None:
                    stat = path.stat()
                    files.append([str(path.relative_to(self.root)), stat.st_size, stat.st_mtime_ns])
        return {"root": str(self.root.resolve()), "files": files}

    def build(self, ctx: BuildContext) -> ReferenceBank:
        """Pool each exemplar's features inside its mask into a `ReferenceBank`."""
        featurizer, encoder, class_names = ctx.featurizer, ctx.encoder, ctx.class_names
        exemplars = self.scan(class_names)
        subcategories = sorted({ex.subcategory for ex in exemplars})
        features, meta = [], []
        for ex in tqdm(exemplars, desc="exemplar references", unit="img", leave=False):
            image = load_rgb(ex.image)
            size = (image.shape[-2], image.shape[-1])
            mask = _load_mask(ex.mask, size) if ex.mask else torch.ones(size, dtype=torch.bool)
            if not mask.any():
                raise DataError(f"{ex.mask}: the mask is empty; it must mark the object with non-zero pixels")
            dense = featurizer(image.to(ctx.device))
            features.append(encoder(mask[None].to(dense.device), dense)[0].cpu())
            meta.append({"image": str(ex.image), "mask": str(ex.mask) if ex.mask else None,
                         "mask_area": int(mask.sum())})
        return ReferenceBank(
            features=torch.stack(features).float(),
            class_ids=torch.tensor([ex.class_id for ex in exemplars], dtype=torch.long),
            subcategory_ids=torch.tensor([subcategories.index(ex.subcategory) for ex in exemplars], dtype=torch.long),
            class_names=list(class_names),
            subcategory_names=subcategories,
            meta=meta,
        )


def _load_mask(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """``(H, W) bool`` from a mask file that must match the image size."""
    try:
        with Image.open(path) as img:
            mask = torch.from_numpy(np.asarray(img.convert("L")) > 0)
    except OSError as e:
        raise DataError(f"'{path}' cannot be read as a mask ({e})") from None
    if tuple(mask.shape) != tuple(size):
        raise DataError(f"{path}: mask is {tuple(mask.shape)} but its image is {tuple(size)}")
    return mask
