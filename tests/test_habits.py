"""House habits: the library logs (the commands print), and an error a config value causes is ours."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
import torch

from rim_bench.core.errors import ConfigError, error_line
from rim_bench.core.logs import console_logging
from rim_bench.core.types import ReferenceBank
from rim_bench.stages.matching.rim import RIMMatcher

PACKAGE = Path(__file__).resolve().parents[1] / "rim_bench"


def test_only_the_commands_print():
    """core, data, stages and run log to `logging.getLogger(__name__)`; the front doors print."""
    printing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "commands" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                printing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not printing, f"print() in the library (log instead): {printing}"


def test_the_console_shows_the_librarys_lines_as_they_are(capsys, caplog):
    """INFO on stdout and WARNING on stderr, bare; the records still reach other handlers (caplog)."""
    console_logging()
    console_logging()  # once, however often it is called
    logger = logging.getLogger("rim_bench.run.results")
    with caplog.at_level(logging.INFO, logger="rim_bench"):
        logger.info("mIoU 62.64")
        logger.warning("rank 1: waiting for rank 0")
    captured = capsys.readouterr()
    assert captured.out == "mIoU 62.64\n" and captured.err == "rank 1: waiting for rank 0\n"
    assert [r.getMessage() for r in caplog.records] == ["mIoU 62.64", "rank 1: waiting for rank 0"]


def _bank(features: torch.Tensor) -> ReferenceBank:
    k = len(features)
    return ReferenceBank(features=features, class_ids=torch.zeros(k, dtype=torch.long), subcategory_ids=torch.arange(k),
                         class_names=["c0"], subcategory_names=[f"s{i}" for i in range(k)])


@pytest.mark.parametrize("matcher, references, message", [
    (RIMMatcher("auto", "kl", 0.0, "max"), torch.randn(1, 4),
     "matcher.rim.temperature: 'auto' needs at least 2 references in the bank, it has 1; set a number"),
    (RIMMatcher("auto", "kl", 0.0, "max"), torch.ones(3, 4),
     "matcher.rim.temperature: 'auto' needs references of different cosines to each other"),
    (RIMMatcher(0.05, "kl", 0.0, "max", exclude_self=True), torch.randn(1, 4),
     "matcher.rim.exclude_self: needs at least 2 references in the bank, it has 1; set matcher.rim.exclude_self=false"),
])
def test_a_bank_the_matcher_settings_do_not_fit_is_a_config_error(matcher, references, message):
    """The CLI reports a `RimBenchError` in one line; a ValueError would end in a traceback."""
    with pytest.raises(ConfigError) as error:
        matcher(torch.randn(2, 4), _bank(references))
    assert error_line(error.value).startswith(message)


def test_the_package_cites_no_file_outside_the_project():
    """A wheel's reader has no ../shared/: a fact is stated where it is used, with its measurement."""
    citing = [str(path.relative_to(PACKAGE.parent)) for path in sorted(PACKAGE.rglob("*"))
              if path.suffix in (".py", ".yaml", ".md", ".txt") and ("../shared" in path.read_text()
                                                                    or "FACTS.md" in path.read_text())]
    assert not citing, f"cite the fact itself, not a file outside the project: {citing}"
