"""A stage's parameters, declared once: the annotated signature of its constructor.

A registered stage's ``__init__`` parameters are its config keys, with their defaults, and
their annotations say what values they take: a type (``int``, ``float``, ``str``, ``bool``,
``list``), ``| None`` when null is allowed, a ``Literal[...]`` for a fixed set of choices,
``Annotated[float, Range(0, 1)]`` for an inclusive range, ``Annotated[dict, Block(X)]`` for
a nested block declared by `X`'s signature (a dataclass), and a plain ``dict`` for a free
block (a tiny test model's settings). An argument the code passes, not the config, is
marked ``Annotated[..., GIVEN]``. `declared` reads them; the config checks every value
against them (`rim_bench.core.config`), and tests check configs/default.yaml's stage
blocks against them, so neither the defaults nor the checks are written twice.

What a stage needs on disk before a run (`HubWeights`, `SamWeights`) it says in a
``weights(params, key)`` classmethod, which `rim-bench plan` calls.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal


@dataclass(frozen=True)
class Range:
    """Bounds of a number, inclusive unless `above` (then values must exceed `low`); None leaves that
    side open."""

    low: float | None = None
    high: float | None = None
    above: bool = False

    def describe(self) -> str:
        if self.above:
            return "positive" if self.low == 0 and self.high is None else f"above {self.low}"
        if self.low is not None and self.high is not None:
            return f"in [{self.low}, {self.high}]"
        return f"at least {self.low}" if self.low is not None else f"at most {self.high}"

    def holds(self, value: float) -> bool:
        over = self.low is None or (value > self.low if self.above else value >= self.low)
        return over and (self.high is None or value <= self.high)


@dataclass(frozen=True)
class Block:
    """A nested block of parameters, declared by `of`'s signature (None: any keys)."""

    of: Callable[..., Any] | None = None


class _Given:
    """Marks an argument that the code passes, not the config (e.g. the background class id)."""


class _Parts:
    """Marks a list of other variants of the same stage block that a composite stage is made of (the
    ``mixed`` reference source's ``sources``): the registry builds each and passes the objects."""


class _Presentation:
    """Marks a parameter that changes only what a run shows (pictures), never what a cache holds."""


GIVEN = _Given()
PARTS = _Parts()
PRESENTATION = _Presentation()
POSITIVE = Range(0, above=True)


def ref(expression: str) -> Any:
    """A default that is another key's value, as default.yaml writes it: ``ref("${seed}")``."""
    return expression


@dataclass(frozen=True)
class Param:
    """One declared parameter."""

    name: str
    default: Any  # inspect.Parameter.empty when the signature gives none
    types: tuple[type, ...] = ()  # the value's types (besides `choices`); empty: any
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    range: Range | None = None
    block: dict[str, Param] | None = None  # a declared nested block
    free: bool = False  # a block of any keys
    presentation: bool = False  # only what a run shows: out of the cache keys (`Annotated[..., PRESENTATION]`)
    parts: bool = False  # names of other variants of its block, built by the registry (`Annotated[list, PARTS]`)

    def describe(self) -> str:
        """What the parameter takes, for messages ("float in [0, 1] or null", "float > 0 or 'auto'")."""
        parts = []
        if self.types:
            kind = "float" if float in self.types else " or ".join(t.__name__ for t in self.types)
            bounds = self.range.describe() if self.range else ""
            parts.append(f"{kind} > 0" if bounds == "positive" else f"{kind} {bounds}".strip())
        parts += [repr(c) for c in self.choices]
        return " or ".join(parts + (["null"] if self.nullable else []))


def _like(default: Any) -> str:
    return "" if default is inspect.Parameter.empty or isinstance(default, dict) else f" like its default {default!r}"


def declared(builder: Callable[..., Any]) -> dict[str, Param]:
    """The config parameters of a stage (a class: its ``__init__``; or a function), by name."""
    function = builder.__init__ if inspect.isclass(builder) else builder
    hints = typing.get_type_hints(builder if dataclasses.is_dataclass(builder) else function, include_extras=True)
    params = {}
    for name, p in inspect.signature(builder).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        param = _param(name, hints.get(name, Any), p.default)
        if param is not None:
            params[name] = param
    return params


def _param(name: str, hint: Any, default: Any) -> Param | None:
    """`hint` read as a `Param`; None for a `GIVEN` argument."""
    members = typing.get_args(hint) if _is_union(hint) else (hint,)
    kinds: list[type] = []
    choices: list[Any] = []
    nullable, bounds, block, free, presentation, parts = False, None, None, False, False, False
    for member in members:
        metadata: tuple[Any, ...] = ()
        if typing.get_origin(member) is Annotated:
            member, *rest = typing.get_args(member)
            metadata = tuple(rest)
        if any(m is GIVEN for m in metadata):
            return None
        presentation = presentation or any(m is PRESENTATION for m in metadata)
        parts = parts or any(m is PARTS for m in metadata)
        bounds = next((m for m in metadata if isinstance(m, Range)), bounds)
        nested = next((m for m in metadata if isinstance(m, Block)), None)
        origin = typing.get_origin(member) or member
        if member is type(None):
            nullable = True
        elif origin is Literal:
            choices += typing.get_args(member)
        elif origin is dict:
            kinds.append(dict)
            if nested is not None and nested.of is not None:
                block = declared(nested.of)
            else:
                free = True
        elif isinstance(origin, type) and origin is not Any:
            kinds.append(origin)
    if block is not None and default is inspect.Parameter.empty:
        default = {k: p.default for k, p in block.items()}
    return Param(name, default, tuple(kinds), tuple(choices), nullable, bounds, block, free, presentation, parts)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def problem(param: Param, value: Any) -> str | None:
    """What is wrong with `value` for `param` ("must be in [0, 1], got 2"), or None.
    Interpolations ("${...}") are checked once resolved; a block's members one by one."""
    if isinstance(value, str) and "${" in value:
        return None
    if value is None:
        return None if param.nullable or param.default is None else f"cannot be null; give {param.describe()}"
    if (value in param.choices and not isinstance(value, bool)) or not (param.types or param.choices):
        return None  # a choice, or a parameter without an annotation
    if not _of_type(value, param.types):
        if param.default is None and param.types and not param.choices:  # "a number or null", as for other keys
            wanted = "a number" if float in param.types else "a path (text)" if str in param.types else "int"
            return f"must be {wanted} or null, got {type(value).__name__} {value!r}"
        if param.choices and not param.types:
            return f"unknown {value!r} (choose {', '.join(map(str, param.choices))})"
        return f"must be {param.describe()}{_like(param.default)}, got {type(value).__name__} {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}; give a number like 0.1"
    if param.range and isinstance(value, (int, float)) and not param.range.holds(value):
        return f"must be {param.range.describe()}, got {value!r}"
    return None


def _of_type(value: Any, kinds: tuple[type, ...]) -> bool:
    if not kinds:
        return False
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, tuple(k for k in kinds if k is not bool)) or (isinstance(value, tuple) and list in kinds)


@dataclass(frozen=True)
class HubWeights:
    """A transformers / diffusers model a stage loads: a hub id or a local folder holding `marker`."""

    key: str  # its config key, e.g. "featurizer.dinov2.model"
    model: str
    marker: str = "config.json"


def hub_model_weights(params: dict, key: str) -> list[HubWeights]:
    """A stage's `weights` when its ``model`` parameter is a hub id or folder (none for ``tiny``)."""
    return [] if params["model"] == "tiny" else [HubWeights(f"{key}.model", params["model"])]


@dataclass(frozen=True)
class FileWeights:
    """A weights file a stage loads as it is (e.g. an OpenAI CLIP ``ViT-B-16.pt``)."""

    key: str  # its config key, e.g. "pixel.clip.model"
    path: str
    what: str  # what the file is, for the message
    check: Callable[[Path], str | None] | None = None  # the stage's own check of the file: a problem line, or None


@dataclass(frozen=True)
class SamWeights:
    """A SAM checkpoint a stage loads."""

    key: str  # its config block, e.g. "proposer.sam"
    model_type: str
    checkpoint: str | None = field(default=None)


Weights = HubWeights | SamWeights | FileWeights  # what a stage loads, checked before a run


def first_problem(params: dict[str, Param], values: dict[str, Any], prefix: str = "") -> tuple[str, str] | None:
    """``(dotted name, message)`` of the first of `values` its declaration refuses, nested blocks
    included, or None: a stage built from a config that no layer check saw is checked too."""
    for name, value in values.items():
        param = params.get(name)
        if param is None:
            continue
        wrong = problem(param, value)
        if wrong:
            return prefix + name, wrong
        if param.block is not None and isinstance(value, dict):
            found = first_problem(param.block, value, f"{prefix}{name}.")
            if found:
                return found
    return None
