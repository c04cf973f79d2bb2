"""The front doors: the `rim-bench` CLI and its commands (test, segment, sweep, compare, suite,
report, plan), the LightningCLI (`rim-bench-lightning`) and the Python API.
"""
