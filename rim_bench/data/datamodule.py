"""Deprecated path (the layout before the five layers): the data modules live in `rim_bench.run.datamodule`;
``from rim_bench import BenchmarkDataModule``."""

from rim_bench.core.moved import moved_from

__getattr__ = moved_from(__name__, "rim_bench.run.datamodule")
