"""`rim-bench segment`: RIM on image files with a vocabulary given on the command line.

For each image, ``<out>/<name>.png`` is the label map (a palette PNG, pixel = class id,
255 = none) and ``<out>/<name>_overlay.png`` the picture; ``<out>/classes.txt`` lists the
label ids, and ``<out>/config.yaml`` the resolved config. The output folder may hold none of
the input images (it would replace them), and is held by one run at a time (`rim_bench.output_lock`).
"""

from __future__ import annotations

import glob
from pathlib import Path

from tqdm import tqdm

from rim_bench.config import load_config, save_config
from rim_bench.errors import ConfigError, DataError
from rim_bench.io import atomic_path, atomic_write_text, file_in, safe_name
from rim_bench.output_lock import hold_output, refuse_inputs_inside

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


def segment_images(inputs: list[str], classes: str, out: Path, overrides: list[str]) -> None:
    """Segment every image `inputs` name with the comma-separated `classes` (see the module doc)."""
    from rim_bench.api import RIM, parse_vocabulary
    from rim_bench.lit_module import save_label_png

    images = find_images(inputs)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file: give a folder (it is created if missing)")
    refuse_inputs_inside(out, images, "--out")
    names = classes.split(",") if classes.strip() else []
    check_printable(names)
    vocabulary = parse_vocabulary(names)
    if not any(o.startswith("experiment=") for o in overrides):
        raise ConfigError("rim-bench segment: give experiment=NAME (rim_voc21 for RIM with real weights, "
                          "smoke or tiny to try it without any)")
    rim = RIM(load_config(overrides))
    rim.set_vocabulary(vocabulary)
    with hold_output(out, "--out"):
        save_config(rim.cfg, out / "config.yaml")
        atomic_write_text(out / "classes.txt", "".join(f"{i} {name}\n" for i, name in enumerate(rim.class_names)))
        for image, name in zip(tqdm(images, desc="segment", unit="img"), output_names(images)):
            result = rim.segment(image)
            save_label_png(result.label_map, file_in(out, name, ".png"))
            picture = result.overlay(image.name)
            with atomic_path(file_in(out, name, "_overlay.png")) as tmp:
                picture.save(tmp, format="PNG")
            shares = ", ".join(f"{c} {s:.0%}" for c, s in result.area_shares().items()) or "no class"
            tqdm.write(f"{image}: {shares}")
    print(f"label maps and overlays: {out}/ (label ids in {out}/classes.txt)")


def check_printable(names: list[str]) -> None:
    """Refuse a class name holding a line break or another control character: classes.txt gives
    class id i on line i + 1, and such a name would break that line in two (or hide in it)."""
    import unicodedata

    for name in names:
        if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
            raise ConfigError(f"--classes: the class name {name!r} holds a line break or control character; "
                              "give printable names separated by commas")
