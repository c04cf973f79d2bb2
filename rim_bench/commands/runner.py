"""Deprecated path (the layout before the five layers): `run_test` and `build_bank` live in
`rim_bench.run.runner`, `check_data` in `rim_bench.run.datasets`."""

from rim_bench.core.moved import moved_from

__getattr__ = moved_from(__name__, "rim_bench.run.runner", check_data="rim_bench.run.datasets")
