"""Configs: OmegaConf YAML merged default → experiment file → method → protocol → command line.

`configs/default.yaml` lists every key with its default and a comment; a stage variant's
parameters are declared by the stage itself (`rim_bench.core.params`), default.yaml's block
repeats them for reading (a test keeps the two equal), and a registered variant that
default.yaml lacks gets its block from its declaration when a layer names it.

An experiment file may start with ``extends: NAME`` (or a list of names): those files (other
experiments, or shared pieces like ``real/rim``) are merged first, in order.
A later layer may only set keys that exist, with a value that the key's declaration allows: its
type, choices and range (`rim_bench.core.params`). A stage parameter is declared by its stage's
annotated signature (read through the registries), every other key in `rim_bench.core.settings`,
the same way; a free block's member (a tiny model's settings) keeps its default's type (an int
where a float is expected is fine). Every number is finite (NaN passes any range comparison).
All is checked when the config is loaded, before any model. Errors are one line naming the key and the layer (file path
and line, "command line", or a sweep file).

``method=NAME`` merges ``configs/method/NAME.yaml`` (and the files it `extends`) after the
experiment: one method, RIM or a baseline or a peer; like a protocol file it may hold a
``benchmarks:`` block (a peer method's own settings per benchmark). The name is kept as ``method``.

``protocol=NAME`` merges ``configs/protocol/NAME.yaml`` after the method: a peer's
evaluation protocol (input size, sliding window, background rule, class names). Its
``benchmarks:`` block holds per-benchmark values, merged for the experiment's ``data.name``.
The name is kept as ``protocol`` in the saved config.

Stage blocks select a variant by name and keep each variant's parameters under its
own key, e.g. ``proposer.name: superpixels`` with ``proposer.superpixels.n_segments``.
`stage_spec` returns the selected variant's parameters, which is also what a cache
hashes, so that changing an unused variant's parameters changes no hash.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from rim_bench.core.config_index import CONFIG_DIR
from rim_bench.core.errors import ConfigError, one_line
from rim_bench.core.io import atomic_write_text
from rim_bench.core.params import Param, problem
from rim_bench.core.registry import METHODS, REGISTRIES, STAGE_KINDS, declarations, stage_spec
from rim_bench.core.settings import run_declarations

DEFAULT_FILE = CONFIG_DIR / "default.yaml"

# The trainer keys default.yaml declares; any other lightning.Trainer argument may be given as trainer.NAME.
TRAINER_KEYS = ("accelerator", "devices", "num_nodes", "strategy", "precision")
# Data keys that change how data is read but not what is scored (out of the result hash).
DATA_RUNTIME_KEYS = ("num_workers", "batch_size", "generate")

def load_config(overrides: list[str] | tuple[str, ...] = (), config_dir: Path | None = None,
                layers: list[str] | tuple[str, ...] = (),
                extra: tuple[str, list[str]] | None = None) -> DictConfig:
    """Merge default → `experiment=NAME` file → `method=NAME` file → `protocol=NAME` file → extra
    `layers` → `key=value` overrides → `extra`, and validate.

    Args:
        overrides: command-line style ``dotted.key=value`` strings; ``experiment=NAME``
            picks ``configs/experiment/NAME.yaml`` (or a path to a YAML file), ``method=NAME``
            ``configs/method/NAME.yaml``, ``protocol=NAME`` ``configs/protocol/NAME.yaml`` (or a path).
        config_dir: where ``default.yaml`` and ``experiment/`` live (tests point it elsewhere).
        layers: more config files merged after the experiment, named like experiments
            (e.g. ``real/rim`` for ``configs/real/rim.yaml``).
        extra: ``(source, overrides)``: more ``key=value`` overrides, merged last, whose errors
            name `source` (a sweep file's point) instead of the command line.
    Returns:
        The merged config, struct mode on, interpolations unresolved (but checked to resolve).
    """
    config_dir = Path(config_dir) if config_dir else CONFIG_DIR
    default_file = config_dir / "default.yaml"
    if not default_file.is_file():
        raise ConfigError(
            f"{default_file} not found: the configs ship inside the rim_bench package; "
            "reinstall it (`pip install .`, or `pip install -e .` from a clone)"
        )
    cfg = _read_yaml(default_file)
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_struct(cfg.trainer, False)  # takes any lightning.Trainer argument (`trainer_arguments`)

    experiment, rest = _split_experiment(overrides)
    method, rest = _split_key("method", rest)
    protocol, rest = _split_key("protocol", rest)
    if experiment is not None:
        for exp_file, layer in _experiment_layers(experiment, config_dir, chain=()):
            cfg = _merge_layer(cfg, layer, str(exp_file))
        cfg.experiment = experiment if not experiment.endswith((".yaml", ".yml")) else Path(experiment).stem
    if method is not None:
        cfg = _merge_method(cfg, method, config_dir)
    if protocol is not None:
        cfg = _merge_protocol(cfg, protocol, config_dir)
    for name in layers:
        for path, layer in _experiment_layers(name, config_dir, chain=()):
            cfg = _merge_layer(cfg, layer, str(path))
    for source, items in [("command line", rest), extra or ("", [])]:
        if items:
            cfg = _merge_layer(cfg, _dotlist(items, source), source)
    resolved = _check_resolved(cfg)
    _check_stage_names(resolved)
    if _at_default_smoke_root(resolved):
        cfg.data.generate = True
    return cfg


def _dotlist(items: list[str], source: str) -> DictConfig:
    """``key=value`` strings as a config layer (values parsed as YAML, as OmegaConf does)."""
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{source}: '{item}' is not of the form key=value")
    try:
        return OmegaConf.from_dotlist(list(items))
    except Exception as e:  # yaml.YAMLError and OmegaConf errors alike
        bad = next((i for i in items if not _parses(i)), items)
        raise ConfigError(f"{source}: cannot parse {bad!r}: {error_text(e)}") from None


def _parses(item: str) -> bool:
    try:
        OmegaConf.from_dotlist([item])
        return True
    except Exception:
        return False


def error_text(error: BaseException) -> str:
    """A YAML or OmegaConf error's whole message on one line (their `str` spans several
    lines; the last alone says nothing, e.g. ``object_type=dict``)."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return where + one_line(" ".join(t for t in (error.context, error.problem) if t))
    text = getattr(error, "msg", None) or str(error)
    # OmegaConf appends its context lines (full_key: ..., object_type=...): the key is named by the caller.
    lines = [line for line in text.splitlines() if not line.strip().startswith(_OMEGACONF_CONTEXT)]
    return one_line("\n".join(lines))


_OMEGACONF_CONTEXT = ("full_key:", "object_type=", "reference_type=")


def _check_resolved(cfg: DictConfig) -> DictConfig:
    """Resolve a copy: a bad interpolation fails now, and values that came from one are checked.
    Returns the resolved copy."""
    resolved = resolve(cfg.copy())
    for key, value in _leaves(to_dict(resolved)):  # values that came from an interpolation too
        _check_value(key, value, "resolved config")
    return resolved


def _check_stage_names(cfg: DictConfig) -> None:
    """Each stage's `name` is one of its variant blocks, and ``pipeline`` a registered method kind:
    checked with the config, so that a typo fails at once (`rim-bench config` included), not after
    the models' libraries load."""
    if cfg.pipeline not in METHODS.names():
        raise ConfigError(f"pipeline: unknown method kind '{cfg.pipeline}' (known: {', '.join(METHODS.names())})")
    for key, kind in STAGE_KINDS.items():
        block = cfg[key]
        known = sorted(k for k, v in block.items() if isinstance(v, DictConfig))
        if block.name not in known:
            raise ConfigError(f"{key}.name: unknown {kind} '{block.name}'{did_you_mean(block.name, known)} "
                              f"(known: {', '.join(known)})")


def _at_default_smoke_root(cfg: DictConfig) -> bool:
    """Whether `cfg` reads the smoke set at its default root, ``${cache_dir}/smoke``: the one place
    it is generated without ``data.generate=true`` (another missing data.root is a typo)."""
    if cfg.data.name != "smoke" or cfg.data.root is None:
        return False
    return Path(str(cfg.data.root)).expanduser() == Path(str(cfg.cache_dir)).expanduser() / "smoke"


def _leaves(tree: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every non-mapping value in `tree`."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _split_experiment(overrides: list[str] | tuple[str, ...]) -> tuple[str | None, list[str]]:
    return _split_key("experiment", overrides)


def _split_key(key: str, overrides: list[str] | tuple[str, ...]) -> tuple[str | None, list[str]]:
    """``key=VALUE`` (the last one given) and the other overrides."""
    value, rest = None, []
    for item in overrides:
        if item.startswith(f"{key}="):
            value = item.split("=", 1)[1]
        else:
            rest.append(item)
    return value, rest


def _merge_method(cfg: DictConfig, name: str, config_dir: Path) -> DictConfig:
    """Merge a method file and the files it extends, each with its ``benchmarks.<data.name>`` block."""
    if not name.endswith((".yaml", ".yml")) and not (config_dir / "method" / f"{name}.yaml").is_file():
        known = sorted(p.stem for p in (config_dir / "method").glob("*.yaml"))
        raise ConfigError(f"method '{name}' not found: no file {config_dir / 'method' / name}.yaml; "
                          f"known methods: {', '.join(known) or 'none'}")
    for path, layer in _experiment_layers(name if name.endswith((".yaml", ".yml")) else f"method/{name}",
                                          config_dir, chain=()):
        cfg = _merge_per_benchmark(cfg, layer, path)
    cfg.method = Path(name).stem
    return cfg


def method_benchmarks(name: str, config_dir: Path | None = None) -> set[str]:
    """The benchmarks for which method file `name` (and the files it extends) gives settings of its own."""
    config_dir = Path(config_dir) if config_dir else CONFIG_DIR
    found: set[str] = set()
    for _, layer in _experiment_layers(f"method/{name}", config_dir, chain=()):
        found |= set(layer.get("benchmarks") or {})
    return found


def _merge_protocol(cfg: DictConfig, name: str, config_dir: Path) -> DictConfig:
    """Merge a protocol file: its general values, then its ``benchmarks.<data.name>`` block."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else config_dir / "protocol" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (config_dir / "protocol").glob("*.yaml"))
        raise ConfigError(f"protocol '{name}' not found: no file {path}; known protocols: {', '.join(known) or 'none'}")
    cfg = _merge_per_benchmark(cfg, _read_yaml(path), path)
    cfg.protocol = path.stem
    return cfg


def _merge_per_benchmark(cfg: DictConfig, layer: DictConfig, path: Path) -> DictConfig:
    """Merge `layer`'s general values, then its ``benchmarks.<data.name>`` block."""
    per_benchmark = layer.pop("benchmarks", None) or {}
    cfg = _merge_layer(cfg, layer, str(path))
    if cfg.data.name in per_benchmark:
        cfg = _merge_layer(cfg, per_benchmark[cfg.data.name], f"{path} (benchmarks.{cfg.data.name})")
    return cfg


def _experiment_layers(name: str, config_dir: Path, chain: tuple[str, ...]) -> list[tuple[Path, DictConfig]]:
    """An experiment file and the files it `extends` (a name or a list, merged first, in order)."""
    if name in chain:
        raise ConfigError(f"experiment '{name}' extends itself: {' → '.join((*chain, name))}")
    path = _experiment_file(name, config_dir)
    layer = _read_yaml(path)
    parents = layer.pop("extends", None) if "extends" in layer else None
    parents = [parents] if isinstance(parents, str) else list(parents or [])
    layers = []
    for parent in parents:
        layers += _experiment_layers(str(parent), config_dir, (*chain, name))
    return layers + [(path, layer)]


def _experiment_file(name: str, config_dir: Path) -> Path:
    """``NAME`` → ``configs/experiment/NAME.yaml``; ``DIR/NAME`` → ``configs/DIR/NAME.yaml``
    (shared pieces such as ``real/rim``); a ``.yaml`` path as it is."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
    elif "/" in name:
        path = config_dir / f"{name}.yaml"
    else:
        path = config_dir / "experiment" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml"))
        raise ConfigError(
            f"experiment '{name}' not found: no file {path}; known experiments: {', '.join(known) or 'none'}"
        )
    return path


def _read_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError and OmegaConf errors alike
        raise ConfigError(f"{path}: not valid YAML: {error_text(e)}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return cfg


def to_dict(cfg: DictConfig, resolve: bool = True) -> dict[str, Any]:
    """``OmegaConf.to_container`` of a mapping: a dict (omegaconf's stubs type it as any container)."""
    return cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=resolve))


def _merge_layer(base: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    """Merge one layer into `base` after checking its keys and value types against it."""
    _add_new_variants(base, layer)
    # resolve=False: interpolations stay "${...}"
    _check_types(to_dict(base, resolve=False), to_dict(layer, resolve=False), source, prefix="")
    try:
        merged = OmegaConf.merge(base, layer)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: cannot set '{getattr(e, 'full_key', '?')}': {error_text(e)}") from None
    assert isinstance(merged, DictConfig)  # a mapping merged into a mapping
    return merged


def _add_new_variants(base: DictConfig, layer: DictConfig) -> None:
    """Give `base` the block of each stage variant that `layer` names but default.yaml does not
    have (a stage added in a module of its own): its declared defaults."""
    for key in STAGE_KINDS:
        part = layer.get(key)
        if not isinstance(part, DictConfig):
            continue
        names = {part.get("name"), *(k for k, v in part.items() if isinstance(v, DictConfig))}
        for name in names:
            if isinstance(name, str) and name not in base[key] and name in REGISTRIES[key].names():
                params = REGISTRIES[key].params(name, key)
                with open_dict(base):
                    base[key][name] = {n: p.default for n, p in params.items()
                                       if p.default is not inspect.Parameter.empty}


def _check_types(base: dict, layer: dict, source: str, prefix: str) -> None:
    for key, value in layer.items():
        full = f"{prefix}{key}"
        if key not in base and full.startswith("trainer."):  # another lightning.Trainer argument: checked by it
            _check_value(full, value, source)
            continue
        if key not in base:
            raise ConfigError(f"{source}: unknown config key '{full}'{did_you_mean(key, base, prefix)} "
                              "(the keys are in configs/default.yaml)")
        default = base[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{full}' is a group of keys; set its members, e.g. {full}.<key>=...")
            _check_types(default, value, source, prefix=f"{full}.")
            continue
        param = _declared(full)
        if param is not None and not (param.block or param.free):  # its declaration says what it takes
            _check_value(full, value, source)
            continue
        if value is None and default is not None and not _is_interp(default):
            raise ConfigError(f"{source}: '{full}' cannot be null; give a value of type {type(default).__name__} "
                              f"like its default {default!r}")
        if not _same_type(default, value):
            raise ConfigError(
                f"{source}: '{full}' must be {type(default).__name__} like its default {default!r}, "
                f"got {type(value).__name__} {value!r}"
            )
        _check_value(full, value, source)


def did_you_mean(name: str, known: Any, prefix: str = "") -> str:
    """``; did you mean 'x'?`` for the closest of `known` to a misspelt `name`, or ""."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.75)
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


def _check_value(key: str, value: Any, source: str) -> None:
    """A value against its key's declaration (interpolations are checked resolved)."""
    if value is not None and not _is_interp(value):
        _check_finite(key, value, source)
    param = _declared(key)
    if param is not None:
        wrong = problem(param, value)
        if wrong:
            raise ConfigError(f"{source}: '{key}'{':' if wrong.startswith('unknown') else ''} {wrong}")


def _declared(key: str) -> Param | None:
    """The declaration of `key`: a stage parameter's (`declarations`), another key's (`run_declarations`);
    None for a free block's member or another lightning.Trainer argument."""
    if key.startswith(tuple(f"{k}." for k in STAGE_KINDS)):
        return declarations().get(key)
    return run_declarations().get(key)


def _check_finite(key: str, value: Any, source: str) -> None:
    """NaN and infinity pass every range comparison (NaN < 0 is False), so they are refused
    outright, for every number in the config (list items too)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{source}: '{key}' must be a finite number, got {item!r}; give a number like 0.1")


def _same_type(default: Any, value: Any) -> bool:
    """Whether `value` may replace `default` (null defaults: see `_check_value`)."""
    if default is None or value is None or _is_interp(default) or _is_interp(value):
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _is_interp(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def key_spec(stage: DictConfig, key: str, name: str | None = None) -> dict[str, Any]:
    """`stage_spec` as it goes into cache keys and result hashes (see `drop_unused_tiny`)."""
    return drop_unused_tiny(stage_spec(stage, key, name))


def drop_unused_tiny(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` without its ``tiny`` block (the random test model's settings and seed) when a real
    model is selected: they cannot change what a real model computes, so changing ``seed``
    must not throw away SAM proposals or banks made with real weights. A ``<x>_tiny`` block
    goes with ``<x>_model`` the same way (ProxyCLIP's ``proxy_tiny`` and ``proxy_model``)."""
    def used(key: str) -> bool:
        if key == "tiny":
            return spec.get("model", spec.get("model_type")) == "tiny"
        return not key.endswith("_tiny") or spec.get(key.removesuffix("_tiny") + "_model") == "tiny"

    return {k: v for k, v in spec.items() if used(k)}


def composed_spec(block: DictConfig, key: str) -> dict[str, Any]:
    """The selected variant's parameters (as in a key, `key_spec`); for a composite variant (one that
    declares parts, as ``references.mixed`` its ``sources``), its name and each part's parameters."""
    names = variant_names(block, key)
    if names == [block.name]:
        return key_spec(block, key)
    return {"name": block.name, "parts": [key_spec(block, key, n) for n in names]}


def variant_names(block: DictConfig, key: str) -> list[str]:
    """The variants of stage block `key` a run builds: the selected one, or the parts it is made of."""
    params = REGISTRIES[key].params(block.name, key)
    variant = block.get(block.name) or {}
    return [n for p in params.values() if p.parts for n in variant.get(p.name) or []] or [block.name]


def config_hash(spec: Any, length: int = 12) -> str:
    """A stable short hash of a JSON-able spec (key order does not matter)."""
    if isinstance(spec, (DictConfig, ListConfig)):
        spec = OmegaConf.to_container(spec, resolve=True)
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def resolve(cfg: DictConfig) -> DictConfig:
    """Resolve interpolations in place, turning resolver errors into a ConfigError."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot resolve config value '{getattr(e, 'full_key', '?')}': {error_text(e)}") from None
    return cfg


def save_config(cfg: DictConfig, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def as_overrides(values: dict[str, Any]) -> list[str]:
    """``{dotted.key: value}`` as ``key=value`` overrides (values in YAML, so lists and nulls survive)."""
    return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            for key, value in values.items()]
