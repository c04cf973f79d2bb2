"""`rim-bench segment`: RIM on image files with a vocabulary given on the command line.

For each image, ``<out>/<name>.png`` is the label map (a palette PNG, pixel = class id,
255 = none) and ``<out>/<name>_overlay.png`` the picture; ``<out>/classes.txt`` lists the
label ids, and ``<out>/config.yaml`` the resolved config. The output folder may hold none of
the input images (it would replace them), is held by one run at a time, and must be new, empty,
or an earlier `segment`'s with the same vocabulary (`rim_bench.core.output_lock`).
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from rim_bench.commands.api import RIM
from rim_bench.core.config import load_config, save_config
from rim_bench.core.errors import ConfigError
from rim_bench.core.io import atomic_path, atomic_write_text, file_in
from rim_bench.core.output_lock import refuse_inputs_inside, writing_into
from rim_bench.data.classes import parse_vocabulary
from rim_bench.data.images import find_images, output_names
from rim_bench.run.visualize import save_label_png


def segment_images(inputs: list[str], classes: str, out: Path, overrides: list[str]) -> None:
    """Segment every image `inputs` name with the comma-separated `classes` (see the module doc)."""
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
    with writing_into(out, "segment", "--out", {"classes": rim.class_names}) as earlier:
        if earlier.get("classes") != rim.class_names:  # its label ids would mean other classes than classes.txt's
            raise ConfigError(f"--out '{out}' holds the label maps of another vocabulary ({earlier.get('classes')}, "
                              f"not {rim.class_names}); choose another --out, or delete it")
        _write(rim, images, out)
    print(f"label maps and overlays: {out}/ (label ids in {out}/classes.txt)")


def _write(rim: RIM, images: list[Path], out: Path) -> None:
    """Segment `images` into `out`, held and claimed for this vocabulary."""
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


def check_printable(names: list[str]) -> None:
    """Refuse a class name holding a line break or another control character: classes.txt gives
    class id i on line i + 1, and such a name would break that line in two (or hide in it)."""
    import unicodedata

    for name in names:
        if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
            raise ConfigError(f"--classes: the class name {name!r} holds a line break or control character; "
                              "give printable names separated by commas")
