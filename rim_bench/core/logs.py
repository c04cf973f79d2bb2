"""How the library's messages reach the console.

The library (core, data, stages, run) logs to ``logging.getLogger(__name__)``; it never prints.
The front doors (`rim-bench`, `rim-bench-lightning`, and `RIMModule` in a user's own script when
the script configured no logging) call `console_logging`, which shows rim_bench's records as the
bare lines they are: INFO on stdout (the results tables), WARNING and above on stderr.
`quiet_lightning` keeps Lightning's start-up chatter out of the results.

A run's closing line (its scores and folder) is logged at `SUMMARY`, between INFO and WARNING:
`quiet_console` (``--quiet``) shows those and the warnings only, one line per run.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partialmethod

LIBRARY = "rim_bench"
SUMMARY = 25  # a run's closing line: shown by --quiet, which hides INFO (the per-class and time tables)
logging.addLevelName(SUMMARY, "SUMMARY")
# tqdm >= 4.66 reads its defaults from TQDM_* variables; W&B's messages go with WANDB_SILENT.
QUIET_ENV = {"TQDM_DISABLE": "1", "WANDB_SILENT": "true"}


class ConsoleHandler(logging.Handler):
    """INFO records to stdout, WARNING and above to stderr, as bare messages. The streams are
    looked up at each record, so a redirected ``sys.stdout`` (pytest's capsys) gets the lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # a closed stream must not end the run
            self.handleError(record)


def console_logging(only_if_unconfigured: bool = False) -> None:
    """Show rim_bench's INFO and above on the console (once, however often it is called).

    Args:
        only_if_unconfigured: leave the logging alone if the application set up its own
            (the root logger has a handler), as Lightning does for its logger.
    """
    logger = logging.getLogger(LIBRARY)
    if any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        return
    if only_if_unconfigured and logging.getLogger().hasHandlers():
        return
    logger.addHandler(ConsoleHandler())
    logger.setLevel(logging.INFO)


@contextmanager
def quiet_console() -> Iterator[None]:
    """``--quiet``, while the command runs: the console keeps each run's closing line (`SUMMARY`), the
    commands' final tables and the warnings; the per-class and time tables, progress bars and W&B's
    messages go (they read the environment; DDP's processes rerun the command, ``--quiet`` included)."""
    import tqdm

    console_logging()
    logger = logging.getLogger(LIBRARY)
    level, saved = logger.level, {name: os.environ.get(name) for name in QUIET_ENV}
    bars = tqdm.tqdm.__init__  # TQDM_DISABLE is read when tqdm is imported: in this process, maybe before
    logger.setLevel(SUMMARY)
    os.environ.update(QUIET_ENV)
    tqdm.tqdm.__init__ = partialmethod(bars, disable=True)
    try:
        yield
    finally:
        tqdm.tqdm.__init__ = bars
        logger.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value



def is_quiet() -> bool:
    """Whether the console shows closing lines only (`quiet_console`): Lightning's progress bar goes too."""
    return logging.getLogger(LIBRARY).level > logging.INFO


def plain_warnings() -> None:
    """Show warnings as one line each, ``UserWarning: message``, without the source file and
    line they were raised from (``contextlib.py:137``, a frame of ours: nothing for a user)."""
    def one_line(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 (warnings' signature)
        return f"{category.__name__}: {message}\n"

    warnings.formatwarning = one_line


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter out of the results; warnings that matter stay."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # One image per step by design; the loader worker count is the user's choice (data.num_workers).
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # Raised inside Lightning 2.6 by torch 2.14's pytree; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
