"""Image files named on the command line (`rim-bench segment`, `ImageFolderDataModule`):
files, folders and glob patterns, and a distinct file-safe output name for each."""

from __future__ import annotations

import glob
from pathlib import Path

from rim_bench.core.errors import DataError
from rim_bench.core.io import safe_name

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def find_images(inputs: list[str]) -> list[Path]:
    """Image files from paths, folders (their images, sorted) and glob patterns, in order, once each."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not matches:
                raise DataError(f"folder '{item}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not matches:
                raise DataError(f"no images match '{item}'")
        else:
            raise DataError(f"image '{item}' not found (give files, folders or glob patterns)")
        found += matches
    if not found:
        raise DataError("no images given: rim-bench segment IMAGE_OR_FOLDER... --classes a,b,c")
    return list(dict.fromkeys(found))


def output_names(images: list[Path]) -> list[str]:
    """A distinct, file-safe name per image: its stem, or ``stem-2``, ... when another image's
    files (``<name>.png``, ``<name>_overlay.png``) would take that name."""
    names: list[str] = []
    used: set[str] = set()  # casefolded: "Cat.png" and "cat.png" are one file on macOS and Windows
    for image in images:
        base = name = safe_name(image.stem)
        n = 1
        while name.casefold() in used or f"{name}_overlay".casefold() in used:
            n += 1
            name = f"{base}-{n}"
        used.update((name.casefold(), f"{name}_overlay".casefold()))
        names.append(name)
    return names
