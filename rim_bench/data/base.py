"""The shared base of every benchmark data set.

A benchmark lists ``(id, image path, label path)`` entries from its on-disk layout (the
layouts mmsegmentation's converters write); the base reads them, maps raw label values
to class ids, and checks what can go wrong, naming the file and the fix:

* at construction (cheap, before any model loads): the root, the layout, the split
  file; then, for every entry, that its id is a safe relative name, that its image and
  label exist, and from the file headers alone that they are images of a supported
  mode and of the same size. All entries are checked and every problem is listed;
* per sample (as it is read, and for all samples in `check_all`): undecodable images
  and label values outside the class range.

With ``skip_bad`` the problem entries are left out (listed in `problems`) and a sample
that fails when read comes back as a `BadSample`, so a run scores the rest and says which
ids it skipped; without it, the construction problems are one error that counts and names
them, and a sample failing when read stops the run.

`data.root` may be the folder that holds the benchmark's folder (mmsegmentation's
``data/``, e.g. the one containing ``VOCdevkit/``) or the benchmark's folder itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from rim_bench.core.errors import DataError
from rim_bench.core.types import IGNORE_INDEX, Sample


@dataclass(frozen=True)
class Entry:
    image_id: str
    image: Path
    label: Path
    source: str = ""  # where the id came from ("<split file>:<line>"), for error messages


@dataclass  # not frozen: Lightning rebuilds the dataclasses of a batch when it moves them to a device
class BadSample:
    """A sample that could not be read (with ``skip_bad``): its id and the problem."""

    image_id: str
    problem: str


# Image modes read as 8-bit RGB; 16-bit grey ("I;16*", "I") is scaled down to 8 bits.
IMAGE_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1")
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
LABEL_MODES = ("L", "P", *WIDE_MODES)
MAX_LISTED = 20  # skipped samples named in `test`'s output
# Image sizes `check-data` warns about (`size_warning`).
MIN_SIDE, MAX_SIDE, MAX_ASPECT = 16, 8192, 10


class BenchmarkDataset(Dataset):
    """Test images and labels of one benchmark split.

    Subclasses set the class attributes and implement `list_entries`.

    Args:
        root: ``data.root``: the benchmark's folder or its parent.
        split: ``val`` for every benchmark here (ADE20K's folder is ``validation``).
        max_images: keep the first N entries only; null keeps all.
        num_classes: the length of the class file, for the label range check.
    """

    subdir: ClassVar[str]  # the benchmark's folder below mmsegmentation's data/ folder
    markers: ClassVar[tuple[str, ...]]  # sub-folders that identify the layout
    default_classes: ClassVar[str | None]  # the shipped class file (None: data.classes must be set)
    reduce_zero_label: ClassVar[bool] = False  # raw 0 → ignore, raw v → v - 1
    prepare: ClassVar[str] = "see datasets/README.md"  # how to make the labels, for error messages

    def __init__(self, root: str | Path, split: str, max_images: int | None, num_classes: int,
                 skip_bad: bool = False) -> None:
        self.dir = self.locate(Path(root).expanduser())
        self.split = split
        self.num_classes = num_classes
        self.skip_bad = skip_bad
        entries = self.list_entries(split)
        if max_images is not None:
            entries = entries[:max_images]
        if not entries:
            raise DataError(f"{self.dir}: no '{split}' images found; {self.prepare}")
        self.problems: dict[str, str] = {}  # image id (a repeat: "<id> (again at <place>)") → what is wrong
        first: dict[str, str] = {}  # image id → where it is listed first
        left_out: set[int] = set()  # the indices of the problem entries
        for index, entry in enumerate(tqdm(entries, desc="checking files", unit="img", disable=len(entries) < 1000)):
            problem: str | None
            key = entry.image_id
            if entry.image_id in first:  # it would be scored twice: the first is kept, the repeat left out
                key = f"{entry.image_id} (again at {entry.source or index + 1})"
                problem = (f"{entry.source or self.dir}: id '{entry.image_id}' is listed twice "
                           f"(first at {first[entry.image_id]})")
            else:
                problem = self._entry_problem(entry)
            first.setdefault(entry.image_id, entry.source or str(entry.image))
            if problem:
                self.problems.setdefault(key, problem)
                left_out.add(index)
        if self.problems and not skip_bad:
            raise DataError(problem_summary(self.problems, len(entries), str(self.dir)))
        self.entries = [e for i, e in enumerate(entries) if i not in left_out]  # may be none: check-data lists why
        self._lut = label_lut(self.reduce_zero_label)

    def _entry_problem(self, entry: Entry) -> str | None:
        """What is wrong with an entry that its id and the file headers show, or None."""
        unsafe = unsafe_id(entry.image_id)
        if unsafe:
            where = entry.source or str(self.dir)
            return (f"{where}: id {entry.image_id!r} {unsafe}: ids must be relative names inside the data set; "
                    "fix that line")
        try:
            found = entry.image.is_file()
        except OSError as e:  # e.g. a name over the file system's 255 bytes
            return (f"{entry.source or self.dir}: id '{entry.image_id[:40]}...' cannot name a file ({e.strerror}); "
                    "fix that line")
        if not found:
            return f"image '{entry.image}' of id '{entry.image_id}' not found; {self.prepare}"
        if not entry.label.is_file():
            return f"image '{entry.image.name}' has no label: '{entry.label}' not found; {self.prepare}"
        try:
            image_mode, image_size = _header(entry.image)
            label_mode, label_size = _header(entry.label)
        except DataError as e:
            return str(e)
        if image_mode not in IMAGE_MODES + WIDE_MODES:
            return f"image '{entry.image}' has mode {image_mode}: {_MODE_FIX}"
        if label_mode not in LABEL_MODES:
            return (f"label '{entry.label}' has mode {label_mode}: expected a single-channel class-id PNG "
                    f"(L, P or 16-bit); {self.prepare}")
        if image_size != label_size:
            return (f"label '{entry.label}' is {label_size[1]}x{label_size[0]} but image '{entry.image.name}' is "
                    f"{image_size[1]}x{image_size[0]}: labels must have the image's size; {self.prepare}")
        return None

    @classmethod
    def locate(cls, root: Path) -> Path:
        """The benchmark's folder: ``root/subdir`` or `root` itself, whichever has the layout."""
        if not root.is_dir():
            raise DataError(f"data root '{root}' does not exist: set data.root=PATH (see datasets/README.md)")
        for candidate in (root / cls.subdir, root):
            if all((candidate / m).is_dir() for m in cls.markers):
                return candidate
        present = sorted(p.name for p in root.iterdir())[:12]
        wanted = ", ".join(f"{cls.subdir}/{m}/" for m in cls.markers)
        raise DataError(
            f"data root '{root}' does not have the expected layout: wanted {wanted} (or those folders directly "
            f"under it); found {', '.join(present) or 'nothing'}; {cls.prepare}"
        )

    def list_entries(self, split: str) -> list[Entry]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample | BadSample:
        """The sample; with ``skip_bad``, a `BadSample` if it cannot be read."""
        try:
            return self._read(self.entries[index])
        except DataError as e:
            if self.skip_bad:
                return BadSample(self.entries[index].image_id, str(e))
            raise

    def _read(self, entry: Entry) -> Sample:
        image = read_image(entry.image, "RGB")
        raw = read_image(entry.label, None)
        if raw.ndim != 2:
            raise DataError(f"label '{entry.label}' has {raw.shape[-1]} channels: "
                            f"expected a single-channel class-id PNG; {self.prepare}")
        if image.shape[:2] != raw.shape:
            raise DataError(
                f"label '{entry.label}' is {raw.shape[0]}x{raw.shape[1]} but image '{entry.image.name}' is "
                f"{image.shape[0]}x{image.shape[1]}: labels must have the image's size; {self.prepare}"
            )
        label = self._lut[raw] if raw.dtype == np.uint8 else self._map_wide(raw, entry.label)
        bad = (label != IGNORE_INDEX) & (label >= self.num_classes)
        if bad.any():
            values = sorted(set(raw[bad].tolist()))[:5]
            raise DataError(
                f"label '{entry.label}' has values {values} outside the {self.num_classes} classes (and not 255): "
                f"wrong converter output or class file? {self.prepare}"
            )
        return Sample(
            image=torch.from_numpy(image).permute(2, 0, 1).contiguous(),
            label=torch.from_numpy(label),  # uint8: 8x less to pass between processes, no range check to score
            image_id=entry.image_id,
        )

    def _map_wide(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.min() < 0 or raw.max() > 255:
            raise DataError(f"label '{path}' has values outside 0..255 ({raw.min()}..{raw.max()}); {self.prepare}")
        return self._lut[raw.astype(np.uint8)]

    def size_warnings(self) -> Iterator[str]:
        """A line for each image of an extreme size or shape (`size_warning`), from the headers."""
        for entry in self.entries:
            warning = size_warning(entry.image, _header(entry.image)[1])
            if warning:
                yield warning

    def check_all(self) -> Iterator[str]:
        """Every problem of the data set, one message each: those found at construction
        (with ``skip_bad``), then those of reading every sample (with a progress bar)."""
        yield from self.problems.values()
        found = len(self.problems)  # counted as checked: the bar counts every image of the set
        for entry in tqdm(self.entries, desc=f"checking {type(self).__name__}", unit="img",
                          total=found + len(self.entries), initial=found):
            try:
                self._read(entry)
            except DataError as e:
                yield str(e)


def size_warning(path: Path, size: tuple[int, int]) -> str | None:
    """Why an image of ``(W, H)`` `size` deserves a look, or None. Any size is scored (the
    model sees it resized, the long side capped: `rim_bench.stages.features.dense.model_input_size`),
    but a sliver or a huge side is most often a damaged or wrongly converted file."""
    width, height = size
    if min(size) < MIN_SIDE:
        why = f"a side under {MIN_SIDE} px"
    elif max(size) > MAX_SIDE:
        why = f"a side over {MAX_SIDE} px"
    elif max(size) > MAX_ASPECT * min(size):
        why = f"an aspect ratio over {MAX_ASPECT}:1"
    else:
        return None
    return f"image '{path}' is {height}x{width}, {why}: it is scored, but is it a damaged or wrongly converted file?"


def problem_summary(problems: dict[str, str], total: int, where: str) -> str:
    """One line: how many of `total` samples have problems, the first few, and the fixes."""
    first = "; ".join(list(problems.values())[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return (f"{len(problems)} of {total} samples in {where} have problems: {first}{more}; "
            "`rim-bench check-data` lists them all, data.skip_bad=true scores the rest")


def unsafe_id(image_id: str) -> str | None:
    """Why an id from a split file cannot name files inside the data set, or None.

    An id is joined into input and output paths: it must be relative, without '..' parts,
    backslashes or NUL characters (an id '/abs/v' would read, and write, '/abs/v.png')."""
    from pathlib import PurePosixPath

    if not image_id:
        return "is empty"
    if "\0" in image_id or "\\" in image_id:
        return "holds a NUL character or a backslash"
    path = PurePosixPath(image_id)
    if path.is_absolute() or image_id.startswith("~"):
        return "is an absolute path"
    if ".." in path.parts:
        return "has a '..' part"
    return None


def label_lut(reduce_zero_label: bool) -> np.ndarray:
    """A 256-entry uint8 lookup table from raw label values to class ids (255 stays 255)."""
    lut = np.arange(256, dtype=np.uint8)
    if reduce_zero_label:
        lut = np.roll(lut, 1)  # value v → v - 1
        lut[0] = IGNORE_INDEX
        lut[255] = IGNORE_INDEX
    return lut


_MODE_FIX = ("expected an 8-bit RGB, L, P or CMYK image (or 16-bit grey, scaled to 8 bits); "
             "convert it, e.g. with PIL: Image.open(f).convert('RGB').save(f)")


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """An image file's mode and ``(W, H)`` size, from its header alone (nothing is decoded)."""
    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise unreadable(path, e) from None


def unreadable(path: Path, error: Exception) -> DataError:
    """The error for an image file PIL cannot open or decode, with the fix."""
    if isinstance(error, Image.DecompressionBombError):  # more pixels than PIL opens (Image.MAX_IMAGE_PIXELS)
        return DataError(f"'{path}' is too large to read ({error}): resize it")
    return DataError(f"'{path}' cannot be read as an image ({error}): re-download or re-convert it")


def read_image(path: Path, mode: str | None) -> np.ndarray:
    """Read an image as an array: ``(H, W, 3) uint8`` for mode "RGB", raw indices for mode None.

    16-bit grey images are scaled to 8 bits for "RGB" (a plain conversion would clip them to
    white); other modes (float, 32-bit values above 65535) are refused with the fix."""
    try:
        with Image.open(path) as img:
            if mode is None:
                return np.array(img)
            if img.mode in IMAGE_MODES:
                return np.array(img.convert(mode))
            if img.mode in WIDE_MODES:
                wide = np.array(img).astype(np.int64)
                if wide.min() >= 0 and wide.max() <= 65535:
                    grey = Image.fromarray((wide // 257).astype(np.uint8))
                    return np.array(grey.convert(mode))
            raise DataError(f"image '{path}' has mode {img.mode}: {_MODE_FIX}")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise unreadable(path, e) from None


def load_rgb(path: Path) -> torch.Tensor:
    """An image file as a ``(3, H, W) uint8`` RGB tensor (`DataError` if it cannot be read)."""
    return torch.from_numpy(read_image(path, "RGB")).permute(2, 0, 1).contiguous()


def read_split(path: Path, prepare: str) -> list[tuple[str, str]]:
    """The ids in a split file, one a line, each with its place (``"<file>:<line>"``); the
    dataset checks that they are safe (`unsafe_id`)."""
    if not path.is_file():
        raise DataError(f"split file '{path}' not found; {prepare}")
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(line.strip(), f"{path}:{n}") for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
