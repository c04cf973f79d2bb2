"""Name → constructor registries for every stage; names are config values.

Modeled on segment-anything's `sam_model_registry`: a plain mapping, filled by a
decorator in the module that defines each stage. `build_stage` turns a config block
(``name`` + that variant's parameters) into an object, and turns a bad parameter into
an error that names the config key.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from omegaconf import DictConfig

from rim_bench.config import stage_spec
from rim_bench.errors import ConfigError, ParamError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping from variant name to constructor, for one kind of stage."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            return builder

        return decorator

    def names(self) -> list[str]:
        return sorted(self._builders)

    def get(self, name: str, key: str) -> Callable[..., T]:
        if name not in self._builders:
            raise ConfigError(f"{key}.name: unknown {self.kind} '{name}' (known: {', '.join(self.names())})")
        return self._builders[name]


PROPOSERS: Registry = Registry("region proposer")
FEATURIZERS: Registry = Registry("dense featurizer")
ENCODERS: Registry = Registry("region encoder")
REFERENCE_SOURCES: Registry = Registry("reference source")
MATCHERS: Registry = Registry("matcher")
SEGMENTERS: Registry = Registry("segmenter")
DATASETS: Registry = Registry("dataset")


def build_stage(registry: Registry, block: DictConfig, key: str, name: str | None = None, **extra: Any) -> Any:
    """Build the variant that `block.name` (or `name`) selects with its parameters `block[name]`.

    Args:
        registry: the registry of that stage kind.
        block: the config block, e.g. ``cfg.matcher``.
        key: its dotted key, for error messages (``"matcher"``).
        extra: objects the constructor needs beside its config (e.g. a class list).
    A constructor reports a bad parameter with `ParamError(param, message)`; it reaches
    the user as ``key.name.param: message``.
    """
    spec = stage_spec(block, key, name)
    name = spec.pop("name")
    builder = registry.get(name, key)
    try:
        return builder(**spec, **extra)
    except ParamError as e:
        raise ConfigError(f"{key}.{name}.{e.param}: {e.message}") from None
