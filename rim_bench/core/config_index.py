"""Where the shipped configs live, and what `rim-bench <command> --help` lists from them.

Read from file names and default.yaml's top-level keys only (no YAML parser, no torch), so
that ``--help`` stays instant.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

# rim_bench/, however deep this module sits in it (importlib.resources would cost --help 12 ms)
PACKAGE_DIR = Path(__file__).resolve().parents[__name__.count(".") - 1]
CONFIG_DIR = PACKAGE_DIR / "configs"


def shipped(kind: str) -> list[str]:
    """The names of the YAML files in ``configs/<kind>/`` (experiment, sweep, method, lightning)."""
    return sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))


def top_level_keys() -> list[str]:
    """default.yaml's top-level keys, groups of keys as ``name.*``."""
    keys = []
    for line in (CONFIG_DIR / "default.yaml").read_text().splitlines():
        match = re.match(r"([A-Za-z_]\w*):\s*([^#]*)", line)
        if match:
            keys.append(match.group(1) + (".*" if not match.group(2).strip() else ""))
    return keys


def help_listing(*kinds: str) -> str:
    """Lines for a command's ``--help``: the shipped files of each kind, then the config keys."""
    labels = {"experiment": "experiments (experiment=NAME)", "sweep": "sweeps (sweep=NAME)",
              "method": "methods (method=NAME; compare: methods=[a,b])", "suite": "suites (NAME)"}
    lines = [f"{labels[kind]}: {', '.join(shipped(kind))}" for kind in kinds]
    lines.append(f"config keys (key=value; `rim-bench config` prints every value): {', '.join(top_level_keys())}")
    return "\n".join(textwrap.fill(line, width=100, subsequent_indent="    ") for line in lines)
