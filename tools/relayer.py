#!/usr/bin/env python3
"""Move rim_bench's modules into the layer folders, and rewrite every reference to them (issue 21, item 3).

    python tools/relayer.py            # on a clean tree, from anywhere in the repository
    python tools/relayer.py --check    # list what it would move and rewrite, change nothing

The layers, lowest first (each imports only from those below it; `pyproject.toml`'s
``[tool.importlinter]`` holds the contract):

    core      types, errors, io, timing, config, registry, ...: imports nothing of ours above it
    data      the benchmarks' data sets, class lists, converters
    stages    backbones, proposals, features, matching, references, segmenter: each imports core,
              data and backbones only, never another stage
    run       assembly, pipeline, the LightningModule, the data modules, metrics, results
    commands  the CLI and its commands, the LightningCLI, the Python API

What it does, idempotently (a second run changes nothing):
  1. ``git mv`` each module of `LAYOUT` into its folder, and writes the folders' ``__init__.py``;
  2. rewrites every tracked text file (code, tests, configs, docs, .ci, pyproject.toml):
     dotted names (``rim_bench.runner`` in imports, monkeypatch targets, ``python -m``, entry
     points, package-data keys, registry package lists, class paths in YAML),
     ``from rim_bench import runner`` forms, and paths (``rim_bench/segmenter.py``);
  3. sorts the imports it changed (``ruff check --select I --fix``) and lists the lines the
     longer names made too long (E501), to wrap by hand.
It refuses to start when rim_bench/ holds a top-level module that `LAYOUT` does not place
(a module added since): add it to `LAYOUT` first.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = "rim_bench"

# Old dotted module (below rim_bench) → new one. A package moves with everything in it.
LAYOUT: dict[str, str] = {
    # core: the vocabulary every layer shares
    "config": "core.config",
    "config_index": "core.config_index",
    "errors": "core.errors",
    "io": "core.io",
    "protocols": "core.protocols",
    "registry": "core.registry",
    "threads": "core.threads",
    "timing": "core.timing",
    "types": "core.types",
    "cache_files": "core.cache_files",
    "output_lock": "core.output_lock",
    # data stays where it is (rim_bench/data: data sets, class lists, converters), but for its Lightning module
    "data.datamodule": "run.datamodule",
    # stages: one folder each; the segmenter takes its background rules along
    "backbones": "stages.backbones",
    "proposals": "stages.proposals",
    "features": "stages.features",
    "matching": "stages.matching",
    "references": "stages.references",
    "segmenter": "stages.segmenter",  # a module becomes a package (its __init__.py)
    "background": "stages.segmenter.background",
    # run: a config and a data module → scores, label maps, results
    "assembly": "run.assembly",
    "pipeline": "run.pipeline",
    "region_cache": "run.region_cache",
    "metrics": "run.metrics",
    "lit_module": "run.lit_module",
    "visualize": "run.visualize",
    "tracking": "run.tracking",
    # commands: the front doors
    "api": "commands.api",
    "cli": "commands.cli",
    "runner": "commands.runner",
    "segment_images": "commands.segment_images",
    "sweep": "commands.sweep",
    "compare": "commands.compare",
    "suite": "commands.suite",
    "report": "commands.report",
    "plan": "commands.plan",
    "lightning": "commands.lightning",
}

# The packages among them (the rest are modules).
PACKAGES = {"backbones", "proposals", "features", "matching", "references"}

# Modules that become packages: their file becomes the package's __init__.py.
TO_PACKAGE = {"segmenter"}

# What stays at the top of rim_bench/ (besides the layer folders).
STAYS = {"__init__", "data", "configs"}

LAYER_DOCS = {
    "core": "The core: types, errors, file writing, timing, the config and the stage registries.\n\n"
            "It imports nothing of rim_bench's above it (`data`, `stages`, `run`, `commands`).",
    "stages": "The stages of the method: backbones, region proposals, dense features, references,\n"
              "matching, the segmenter (with its background rules).\n\n"
              "Each imports `rim_bench.core`, `rim_bench.data` and `stages.backbones` only, never another stage.",
    "run": "A run: a config assembled into stages and a bank, the pipeline over a data module, the\n"
           "LightningModule, metrics and results writing.\n\n"
           "It imports `core`, `data` and `stages`, never `commands`.",
    "commands": "The front doors: the `rim-bench` CLI and its commands (test, segment, sweep, compare, suite,\n"
                "report, plan), the LightningCLI (`rim-bench-lightning`) and the Python API.",
}

SELF = Path("tools/relayer.py")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".txt", ".sh", ".json", ".rst", ""}


def git(*args: str, root: Path) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def new_path(old: str) -> Path:
    new = Path(PACKAGE, *LAYOUT[old].split("."))
    if old in TO_PACKAGE:
        return new / "__init__.py"
    return new if old in PACKAGES else new.with_suffix(".py")


def unplaced(root: Path) -> list[str]:
    """Top-level modules and packages of rim_bench/ that LAYOUT does not place."""
    names = set()
    for p in (root / PACKAGE).iterdir():
        if p.name.startswith((".", "_")) and p.name != "__init__.py" or p.name == "__pycache__":
            continue
        if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()):
            names.add(p.stem if p.suffix == ".py" else p.name)
    layers = {v.split(".")[0] for v in LAYOUT.values()}
    return sorted(names - set(LAYOUT) - STAYS - layers)


def move(root: Path, dry: bool) -> list[tuple[str, str]]:
    moves = []
    for layer, doc in LAYER_DOCS.items():
        init = root / PACKAGE / layer / "__init__.py"
        if not init.exists():
            moves.append(("(new)", str(init.relative_to(root))))
            if not dry:
                init.parent.mkdir(parents=True, exist_ok=True)
                init.write_text(f'"""{doc}\n"""\n')
                git("add", str(init.relative_to(root)), root=root)
    for old in LAYOUT:
        src = Path(PACKAGE, *old.split("."))
        src = src if old in PACKAGES else src.with_suffix(".py")
        if not (root / src).exists():
            continue  # moved already
        dst = new_path(old)
        moves.append((str(src), str(dst)))
        if dry:
            continue
        (root / dst).parent.mkdir(parents=True, exist_ok=True)
        if (root / src).is_dir():
            shutil.rmtree(root / src / "__pycache__", ignore_errors=True)
        git("mv", str(src), str(dst), root=root)
    return moves


def patterns() -> list[tuple[re.Pattern[str], str | object]]:
    """(regex, replacement) pairs for dotted names and paths, longest old name first."""
    olds = sorted(LAYOUT, key=len, reverse=True)
    dotted = re.compile(rf"(?<![\w.]){PACKAGE}\.({'|'.join(re.escape(o) for o in olds)})(?!\w)")
    file_alts = []
    for o in olds:
        rel = o.replace(".", "/")
        file_alts.append(re.escape(rel) if o in PACKAGES else re.escape(rel + ".py"))
    path = re.compile(rf"(?<![\w.]){PACKAGE}/({'|'.join(file_alts)})(?![\w])")

    def new_dotted(m: re.Match[str]) -> str:
        return f"{PACKAGE}.{LAYOUT[m.group(1)]}"

    def new_file(m: re.Match[str]) -> str:
        old = m.group(1)
        name = old[:-3] if old.endswith(".py") else old
        new = LAYOUT[name.replace("/", ".")].replace(".", "/")
        if old.endswith(".py"):
            return f"{PACKAGE}/{new}/__init__.py" if name in TO_PACKAGE else f"{PACKAGE}/{new}.py"
        return f"{PACKAGE}/{new}"

    return [(path, new_file), (dotted, new_dotted)]


FROM_IMPORT = re.compile(rf"^(?P<indent>[ \t]*)from (?P<mod>{PACKAGE}(?:\.\w+)*) import (?P<names>[^()\n#]+?)"
                         r"(?P<comment>[ \t]*#.*)?$", re.M)


def split_from_imports(text: str) -> str:
    """``from rim_bench import runner, types`` → one line per new parent (the dotted rewrite then
    cannot see these: the moved name is after ``import``)."""

    def fix(m: re.Match[str]) -> str:
        mod = m.group("mod")[len(PACKAGE):].lstrip(".")
        items = [n.strip() for n in m.group("names").split(",") if n.strip()]
        groups: dict[str, list[str]] = {}
        changed = False
        for item in items:
            name, _, alias = item.partition(" as ")
            old = f"{mod}.{name}".lstrip(".")
            if old in LAYOUT:
                parent, _, leaf = f"{PACKAGE}.{LAYOUT[old]}".rpartition(".")
                alias = alias or (name if leaf != name else "")
                groups.setdefault(parent, []).append(leaf + (f" as {alias}" if alias else ""))
                changed = True
            else:
                groups.setdefault(m.group("mod"), []).append(item)
        if not changed:
            return m.group(0)
        comment = m.group("comment") or ""
        lines = [f"{m.group('indent')}from {parent} import {', '.join(names)}" for parent, names in groups.items()]
        lines[0] += comment
        return "\n".join(lines)

    return FROM_IMPORT.sub(fix, text)


def rewrite(root: Path, dry: bool) -> list[str]:
    subs = patterns()
    changed = []
    for rel in git("ls-files", root=root).splitlines():
        p = root / rel
        if Path(rel) == SELF or p.is_symlink() or not p.is_file() or p.suffix not in TEXT_SUFFIXES:
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        new = split_from_imports(text) if p.suffix == ".py" else text
        for pattern, repl in subs:
            new = pattern.sub(repl, new)  # type: ignore[arg-type]
        if new != text:
            changed.append(rel)
            if not dry:
                p.write_text(new, encoding="utf-8")
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list the moves and the files to rewrite; change nothing")
    args = parser.parse_args()
    root = Path(git("rev-parse", "--show-toplevel", root=Path.cwd()).strip())
    left = unplaced(root)
    if left:
        print(f"relayer: {PACKAGE}/ holds modules LAYOUT does not place: {', '.join(left)}; "
              "add them to LAYOUT in tools/relayer.py", file=sys.stderr)
        return 2
    moves = move(root, args.check)
    for src, dst in moves:
        print(f"move {src} -> {dst}")
    changed = rewrite(root, args.check)
    for rel in changed:
        print(f"rewrite {rel}")
    py = [rel for rel in changed if rel.endswith(".py")]
    if py and not args.check:
        if shutil.which("ruff"):
            subprocess.run(["ruff", "check", "--select", "I", "--fix", "--quiet", *py], cwd=root, check=False)
            long = subprocess.run(["ruff", "check", "--select", "E501", "--output-format", "concise", "--quiet", *py],
                                  cwd=root, check=False, capture_output=True, text=True).stdout
            if long.strip():
                print("relayer: longer names made these lines too long; wrap them by hand:\n" + long, file=sys.stderr)
        else:
            print("relayer: ruff not found; sort the imports: ruff check --select I --fix .", file=sys.stderr)
    print(f"relayer: {len(moves)} moves, {len(changed)} files rewritten" + (" (--check: nothing changed)" if args.check
                                                                            else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
