"""Old module paths kept working after a move: a shim module's ``__getattr__`` that warns and forwards.

    __getattr__ = moved_from(__name__, "rim_bench.run.lit_module")   # in rim_bench/lit_module.py

The new module is imported on first use, by name (`importlib`), so a shim below its target's layer
(``rim_bench.data.datamodule`` → ``rim_bench.run.datamodule``) adds no import to the layer graph and
``import rim_bench`` loads no torch. Each move is listed in CHANGELOG.md.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved_from(old: str, new: str, **elsewhere: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for `old`: each name it is asked for comes from `new` (or the module
    `elsewhere` names for it), with a DeprecationWarning (pointing at the caller's line) that names the
    import to write instead."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):  # the import machinery's probes (__path__, __file__, ...): not a user's name
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        target = elsewhere.get(name, new)
        value = getattr(importlib.import_module(target), name)  # AttributeError for a name it lacks too
        warnings.warn(f"{old}.{name} moved: import it as `from {target} import {name}` (see CHANGELOG.md); "
                      f"the old path will be removed in a later release", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__
