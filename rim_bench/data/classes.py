"""Class-name files: one class a line, ``name, synonym, synonym``; line i is label id i.

Shipped files live in ``rim_bench/data/classes/<name>.txt``; a path to a file of the
same format works wherever a shipped name does.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rim_bench.errors import DataError

SEPARATOR = ","


def class_file(name_or_path: str) -> Path:
    """Resolve a shipped class-file name or a path to the file."""
    shipped = resources.files("rim_bench.data") / "classes" / f"{name_or_path}.txt"
    if shipped.is_file():
        return Path(str(shipped))
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    known = sorted(p.name[:-4] for p in (resources.files("rim_bench.data") / "classes").iterdir() if p.name.endswith(".txt"))
    raise DataError(f"class file '{name_or_path}' not found: give a file path or one of {', '.join(known)}")


def read_classes(name_or_path: str) -> list[list[str]]:
    """Read a class file into ``[[name, synonym, ...], ...]``, checking it is well formed."""
    path = class_file(name_or_path)
    classes: list[list[str]] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        names = [n.strip() for n in line.split(SEPARATOR)]
        if not line.strip() or any(not n for n in names):
            raise DataError(f"{path}:{lineno}: empty class name in {line!r}; one class a line, 'name, synonym, ...'")
        if names[0] in seen:
            raise DataError(f"{path}:{lineno}: class '{names[0]}' is already on line {seen[names[0]]}")
        seen[names[0]] = lineno
        classes.append(names)
    if not classes:
        raise DataError(f"{path}: no classes")
    return classes
