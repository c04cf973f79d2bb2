"""Deprecated path (the layout before the five layers): `RIMModule` lives in `rim_bench.run.lit_module`;
write ``from rim_bench import RIMModule``."""

from rim_bench.core.moved import moved_from

__getattr__ = moved_from(__name__, "rim_bench.run.lit_module")
