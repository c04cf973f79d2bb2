"""Class-name files: one class a line, ``name, synonym, synonym``; line i is label id i.

Shipped files live in ``rim_bench/data/classes/<name>.txt``; a path to a file of the
same format works wherever a shipped name does.
"""

from __future__ import annotations

from pathlib import Path

from rim_bench.errors import DataError
from rim_bench.io import shipped_or_path

SEPARATOR = ","


def class_file(name_or_path: str) -> Path:
    """Resolve a shipped class-file name or a path to the file."""
    return shipped_or_path("rim_bench.data", "classes", ".txt", name_or_path, "class file")


def read_classes(name_or_path: str) -> list[list[str]]:
    """Read a class file into ``[[name, synonym, ...], ...]``, checking it is well formed."""
    path = class_file(name_or_path)
    classes: list[list[str]] = []
    seen: dict[str, int] = {}
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad_line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{bad_line}: not UTF-8 text (byte {raw[e.start]:#04x}); "
                        "save the file as UTF-8") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
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
