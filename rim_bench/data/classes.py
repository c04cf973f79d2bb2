"""Class-name files: one class a line, ``name, synonym, synonym``; line i is label id i.

Shipped files live in ``rim_bench/data/classes/<name>.txt``; a path to a file of the
same format works wherever a shipped name does.
"""

from __future__ import annotations

from pathlib import Path

from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.io import shipped_or_path

SEPARATOR = ","


def class_file(name_or_path: str) -> Path:
    """Resolve a shipped class-file name or a path to the file."""
    return shipped_or_path("rim_bench.data", "classes", ".txt", name_or_path, "class file")


def read_classes(name_or_path: str) -> list[list[str]]:
    """Read a class file into ``[[name, synonym, ...], ...]``, checking it is well formed."""
    path = class_file(name_or_path)
    classes: list[list[str]] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(utf8_text(path).splitlines(), start=1):
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


def utf8_text(path: Path) -> str:
    """A class file's text; a `DataError` naming the line if it is not UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad_line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{bad_line}: not UTF-8 text (byte {raw[e.start]:#04x}); "
                        "save the file as UTF-8") from None


def parse_vocabulary(classes: list[str] | list[list[str]]) -> list[list[str]]:
    """Class names (with synonyms) as ``[[name, synonym, ...], ...]``, checked.

    Raises:
        ConfigError: not a list, no classes, an empty name, or a name given twice.
    """
    if isinstance(classes, str):
        classes = [classes]
    if not isinstance(classes, (list, tuple)):  # None, a number, a dict: no order to give label ids
        raise ConfigError(f"the vocabulary is a {type(classes).__name__}: give a list of class names, "
                          "e.g. ['cat', 'dog']")
    for i, c in enumerate(classes):
        if not isinstance(c, str) and not (isinstance(c, (list, tuple)) and all(isinstance(n, str) for n in c)):
            raise ConfigError(f"class {i + 1} ({c!r}) is a {type(c).__name__}: give class names as text, "
                              "e.g. ['cat', 'dog'] (or ['cat', 'kitty'] for a name with a synonym)")
    vocabulary = [[n.strip() for n in (c.split(",") if isinstance(c, str) else c)] for c in classes]
    if not vocabulary:
        raise ConfigError("the vocabulary is empty: give at least one class name (e.g. --classes cat,dog)")
    seen: dict[str, int] = {}
    for i, line in enumerate(vocabulary):
        if not line or any(not n for n in line):
            raise ConfigError(f"class {i + 1} ({classes[i]!r}) has an empty name")
        key = line[0].casefold()
        if key in seen:
            raise ConfigError(f"class '{line[0]}' is given twice (entries {seen[key] + 1} and {i + 1}); "
                              "give each class once, with synonyms after a comma")
        seen[key] = i
    return vocabulary
