"""A run: a config assembled into stages and a bank, the pipeline over a data module, the
LightningModule, metrics and results writing.

It imports `core`, `data` and `stages`, never `commands`.
"""
