"""The core: types, errors, file writing, timing, the config and the stage registries.

It imports nothing of rim_bench's above it (`data`, `stages`, `run`, `commands`).
"""
