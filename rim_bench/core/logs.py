"""How the library's messages reach the console.

The library (core, data, stages, run) logs to ``logging.getLogger(__name__)``; it never prints.
The front doors (`rim-bench`, `rim-bench-lightning`, and `RIMModule` in a user's own script when
the script configured no logging) call `console_logging`, which shows rim_bench's records as the
bare lines they are: INFO on stdout (the results tables), WARNING and above on stderr.
`quiet_lightning` keeps Lightning's start-up chatter out of the results.
"""

from __future__ import annotations

import logging
import sys
import warnings

LIBRARY = "rim_bench"


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
