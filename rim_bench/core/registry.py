"""Name → constructor registries for every stage; names are config values.

Modeled on segment-anything's `sam_model_registry`: a plain mapping, filled by a
decorator in the module that defines each stage. Each registry knows the packages its
stages live in and imports their modules on the first lookup (and again when a name is
not found, so a module added later is seen): adding a stage is one module with a
`@REGISTRY.register("name")` class, with no import list to keep. Its constructor's annotated
signature declares its parameters (`rim_bench.core.params`): `declarations` gives them to the
config checks, and its block in configs/default.yaml repeats them for users, checked against
them by a test.

Reading and checking a config must not load torch, which every stage module imports: the
declarations of the package's own stages are also kept, with the module that registers each,
in ``declarations.json`` beside this file (``python -m rim_bench.core.registry`` writes it from the
code; a test fails when it is stale). A registry answers `names` and `params` from it without
importing a stage module, and imports only the one module a `get` needs; a stage registered
from elsewhere (a user's module, imported first) is read from its signature.
`build_stage` turns a config block (``name`` + that variant's parameters)
into an object, and turns a bad parameter into an error that names the config key.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from omegaconf import DictConfig, OmegaConf

from rim_bench.core.declaration_index import INDEX_FILE, from_registries, indexed, text
from rim_bench.core.errors import ConfigError, ParamError
from rim_bench.core.params import FileWeights, HubWeights, Param, SamWeights, declared, first_problem

# The builder type: a class or a function; registering returns it unchanged.
B = TypeVar("B", bound=Callable[..., Any])


class Registry(Generic[B]):
    """A named mapping from variant name to constructor, for one kind of stage.

    Args:
        kind: what the stages are, for error messages ("matcher").
        packages: the modules or packages whose modules register these stages; a package's
            modules are all imported (except those whose name starts with "_").
        key: its config block (``"matcher"``), under which ``declarations.json`` indexes it; None:
            not indexed (every lookup imports the packages).
    """

    def __init__(self, kind: str, packages: tuple[str, ...] = (), key: str | None = None) -> None:
        self.kind = kind
        self.packages = packages
        self.key = key
        self._builders: dict[str, B] = {}
        self._imported: set[str] = set()

    def register(self, name: str) -> Callable[[B], B]:
        def decorator(builder: B) -> B:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            return builder

        return decorator

    def _index(self) -> dict[str, dict[str, Any]]:
        """This registry's entries in ``declarations.json``: name → module and parameters."""
        return indexed(self.key) if self.key else {}

    def names(self) -> list[str]:
        index = self._index()
        if not index:
            self._fill()
        return sorted(set(self._builders) | set(index))

    def get(self, name: str, key: str) -> B:
        if name not in self._builders and name in self._index():
            importlib.import_module(self._index()[name]["module"])  # that module alone
        if name not in self._builders:
            self._fill()
        if name not in self._builders:
            raise ConfigError(f"{key}.name: unknown {self.kind} '{name}' (known: {', '.join(self.names())})")
        return self._builders[name]

    def params(self, name: str, key: str) -> dict[str, Param]:
        """The declared parameters of variant `name`: from its signature once its module is imported,
        else from the index (no import)."""
        if name not in self._builders and name in self._index():
            return self._index()[name]["params"]
        return declared(self.get(name, key))

    def _fill(self) -> None:
        """Import every not yet imported module of `packages` (their decorators register)."""
        for package in self.packages:
            for module in _modules(package):
                if module not in self._imported:
                    importlib.import_module(module)
                    self._imported.add(module)


def _modules(name: str) -> list[str]:
    """`name` itself, and for a package each of its modules, found on its (possibly extended) path."""
    module = importlib.import_module(name)
    path = getattr(module, "__path__", None)
    if path is None:
        return [name]
    return [name] + [f"{name}.{m.name}" for m in pkgutil.iter_modules(path) if not m.name.startswith("_")]


# Each stage block of the config (its `name` picks the variant) and what its variants are, for messages.
STAGE_KINDS = {"proposer": "region proposer", "featurizer": "dense featurizer", "pooling": "region encoder",
               "references": "reference source", "matcher": "matcher", "segmenter": "segmenter",
               "pixel": "per-pixel method"}

PROPOSERS: Registry = Registry(STAGE_KINDS["proposer"], ("rim_bench.stages.proposals",), "proposer")
FEATURIZERS: Registry = Registry(STAGE_KINDS["featurizer"], ("rim_bench.stages.features",), "featurizer")
ENCODERS: Registry = Registry(STAGE_KINDS["pooling"], ("rim_bench.stages.features",), "pooling")
REFERENCE_SOURCES: Registry = Registry(STAGE_KINDS["references"], ("rim_bench.stages.references",), "references")
MATCHERS: Registry = Registry(STAGE_KINDS["matcher"], ("rim_bench.stages.matching",), "matcher")
SEGMENTERS: Registry = Registry(STAGE_KINDS["segmenter"], ("rim_bench.stages.segmenter",), "segmenter")
PIXEL_METHODS: Registry = Registry(STAGE_KINDS["pixel"], ("rim_bench.stages.pixel",), "pixel")
DATASETS: Registry = Registry("dataset", ("rim_bench.data",))  # of `data.base.BenchmarkDataset` subclasses
# The method kinds (`rim_bench.core.protocols.Method`), picked by the config's ``pipeline``: their module
# imports no torch at the top, so the config checks read it.
METHODS: Registry = Registry("method", ("rim_bench.run.methods",))
# The registry of each stage block of the config.
REGISTRIES: dict[str, Registry] = {"proposer": PROPOSERS, "featurizer": FEATURIZERS, "pooling": ENCODERS,
                                   "references": REFERENCE_SOURCES, "matcher": MATCHERS, "segmenter": SEGMENTERS,
                                   "pixel": PIXEL_METHODS}


def declarations() -> dict[str, Param]:
    """Every registered stage's parameters by dotted config key (``matcher.rim.alpha``), nested
    blocks' members included (``segmenter.paint.background.rule``); imports no stage module."""
    version = tuple((key, name, id(b)) for key, r in REGISTRIES.items() for name, b in r._builders.items())
    if _declared_cache.get("version") != version:  # a stage registered (or removed) since
        found: dict[str, Param] = {}
        for key, registry in REGISTRIES.items():
            for name in registry.names():
                _flatten(registry.params(name, key), f"{key}.{name}.", found)
        _declared_cache.update(version=version, found=found)
    return _declared_cache["found"]


_declared_cache: dict[str, Any] = {}


def _flatten(params: dict[str, Param], prefix: str, into: dict[str, Param]) -> None:
    for name, param in params.items():
        into[prefix + name] = param
        if param.block is not None:
            _flatten(param.block, f"{prefix}{name}.", into)


def stage_weights(key: str, spec: dict[str, Any]) -> list[HubWeights | SamWeights | FileWeights]:
    """What the variant `spec` (``{"name": ..., **params}``, as `stage_spec` gives) of stage block
    `key` loads from disk or the hub, from its ``weights(params, key)`` classmethod (none without one)."""
    params = dict(spec)
    name = params.pop("name")
    weights = getattr(REGISTRIES[key].get(name, key), "weights", None)
    return list(weights(params, f"{key}.{name}")) if weights is not None else []


def build_stage(registry: Registry, block: DictConfig, key: str, name: str | None = None, **extra: Any) -> Any:
    """Build the variant that `block.name` (or `name`) selects with its parameters `block[name]`.

    Args:
        registry: the registry of that stage kind.
        block: the config block, e.g. ``cfg.matcher``.
        key: its dotted key, for error messages (``"matcher"``).
        extra: objects the constructor needs beside its config (e.g. a class list).
    Each parameter is checked against its declaration first; a constructor reports what its
    declaration cannot say (one parameter against another) with `ParamError(param, message)`;
    both reach the user as ``key.name.param: message``.
    """
    spec = stage_spec(block, key, name)
    name = spec.pop("name")
    builder = registry.get(name, key)
    params = declared(builder)
    wrong = first_problem(params, spec)
    if wrong:
        raise ConfigError(f"{key}.{name}.{wrong[0]}: {wrong[1]}")
    for param in (p for p in params.values() if p.parts and p.name in spec):  # a composite stage's parts
        names = spec[param.name]
        others = [n for n in registry.names() if n != name]
        if not names or name in names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{key}.{name}.{param.name}: give one or more of {', '.join(others)}, got {names!r}")
        spec[param.name] = [build_stage(registry, block, key, n, **extra) for n in names]
    try:
        return builder(**spec, **extra)
    except ParamError as e:
        raise ConfigError(f"{key}.{name}.{e.param}: {e.message}") from None


def stage_spec(stage: DictConfig, key: str, name: str | None = None) -> dict[str, Any]:
    """The selected variant of a stage block: ``{"name": ..., **its parameters}``.

    Args:
        stage: a block like ``cfg.proposer`` with a ``name`` and one sub-block per variant.
        key: the block's key in the config, for error messages.
        name: another variant of the block than ``stage.name``.
    """
    name = name or stage.get("name")
    params = stage.get(name) if name in stage else None
    if params is None:
        params = {}
    elif isinstance(params, DictConfig):
        params = cast(dict[str, Any], OmegaConf.to_container(params, resolve=True))
    else:
        raise ConfigError(f"{key}.{name} must be a block of parameters, got {params!r}")
    return {"name": name, **params}


def write_index() -> None:
    """``declarations.json`` from the code: run ``python -m rim_bench.core.registry`` after changing a
    stage's signature (or adding one to the package)."""
    INDEX_FILE.write_text(text(from_registries(REGISTRIES)))


if __name__ == "__main__":  # the package's own module, not this __main__ copy, is the one stages register in
    from rim_bench.core import registry

    registry.write_index()
