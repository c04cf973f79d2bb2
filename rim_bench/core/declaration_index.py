"""``declarations.json``: every shipped stage's declared parameters and the module that registers it.

The declarations themselves are the stages' annotated signatures (`rim_bench.core.params`); this
file is what the code says, written by ``python -m rim_bench.core.registry`` and checked
against the code by a test. It lets the config checks (``rim-bench config``, a key typo) read the
declarations without importing a stage module, hence without torch, and lets a registry import
only the module of the variant a run selects.
"""

from __future__ import annotations

import inspect
import json
from functools import cache
from pathlib import Path
from typing import Any

from rim_bench.core.params import Param, Range

INDEX_FILE = Path(__file__).with_name("declarations.json")
_TYPES = {t.__name__: t for t in (int, float, str, bool, list, dict, Path)}
_EMPTY = "<required>"  # a parameter without a default


def encode(params: dict[str, Param]) -> dict[str, Any]:
    """`params` as JSON-able data (`decode` reads it back equal)."""
    out = {}
    for name, p in params.items():
        entry: dict[str, Any] = {"default": _EMPTY if p.default is inspect.Parameter.empty else p.default}
        if p.types:
            entry["types"] = [t.__name__ for t in p.types]
        if p.choices:
            entry["choices"] = list(p.choices)
        if p.nullable:
            entry["nullable"] = True
        if p.range is not None:
            entry["range"] = [p.range.low, p.range.high, p.range.above]
        if p.block is not None:
            entry["block"] = encode(p.block)
        if p.free:
            entry["free"] = True
        if p.presentation:
            entry["presentation"] = True
        if p.parts:
            entry["parts"] = True
        out[name] = entry
    return out


def decode(data: dict[str, Any]) -> dict[str, Param]:
    params = {}
    for name, e in data.items():
        default = inspect.Parameter.empty if e["default"] == _EMPTY else e["default"]
        bounds = Range(*e["range"]) if "range" in e else None
        block = decode(e["block"]) if "block" in e else None
        types = tuple(_TYPES[t] for t in e.get("types", ()))
        params[name] = Param(name, default, types, tuple(e.get("choices", ())), e.get("nullable", False), bounds,
                             block, e.get("free", False), e.get("presentation", False), e.get("parts", False))
    return params


@cache
def _read() -> dict[str, dict[str, Any]]:
    if not INDEX_FILE.is_file():
        return {}
    raw = json.loads(INDEX_FILE.read_text())
    return {key: {name: {"module": e["module"], "params": decode(e["params"])} for name, e in entries.items()}
            for key, entries in raw.items()}


def indexed(key: str) -> dict[str, dict[str, Any]]:
    """The index's entries for config block `key`: variant name → ``{"module", "params"}``."""
    return _read().get(key, {})


def from_registries(registries: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The index as `registries` (config block → `Registry`) declare their package's stages now (imports every
    stage module of the package)."""
    from rim_bench.core.params import declared

    index: dict[str, dict[str, Any]] = {}
    for key, registry in registries.items():
        registry._fill()
        index[key] = {name: {"module": builder.__module__, "params": encode(declared(builder))}
                      for name, builder in sorted(registry._builders.items())
                      if builder.__module__.startswith("rim_bench.")}  # not a user's (or a test's) stage
    return index


def text(index: dict[str, dict[str, Any]]) -> str:
    return json.dumps(index, indent=1, sort_keys=True) + "\n"
