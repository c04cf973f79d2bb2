"""Deprecated path (the layout before the five layers): `run_test`, `build_bank` and `check_data` live in
`rim_bench.run.runner`."""

from rim_bench.core.moved import moved_from

__getattr__ = moved_from(__name__, "rim_bench.run.runner")
