"""Every random draw seeded from the config's ``seed``, without importing Lightning (`rim-bench segment`,
the API and `plan` never load it): Python's, NumPy's and torch's generators (CUDA's included), as
Lightning's ``seed_everything`` seeds them, and ``PL_GLOBAL_SEED`` for a Trainer's workers."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    os.environ["PL_GLOBAL_SEED"] = str(seed)  # what Lightning's worker_init_function reads
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every CUDA device too
