"""The import graph: no cycle, counting the imports inside functions, and the layers of pyproject.toml.

An import placed inside a function still runs (later), so a cycle it closes is still a cycle: the
graph here has every import statement of rim_bench, wherever it stands. Imports under
``if TYPE_CHECKING:`` are left out: they never run (types.py and protocols.py name each other's
classes in annotations).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the dev extra)")

ROOT = Path(__file__).resolve().parents[1]


def _graph():
    return grimp.build_graph("rim_bench", exclude_type_checking_imports=True, cache_dir=None)


def import_cycles(graph) -> list[list[str]]:
    """The strongly connected parts of the graph with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            part = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.append(top)
                if top == module:
                    break
            if len(part) > 1:
                cycles.append(sorted(part))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def _describe(graph, part: list[str]) -> str:
    """One loop through the part, with the line of each import: a -> b (a.py:12) -> ... -> a."""
    first, links = part[0], []
    for target in part[1:]:
        there = graph.find_shortest_chain(first, target)
        back = graph.find_shortest_chain(target, first)
        if there and back:
            chain = list(there) + list(back[1:])
            for a, b in zip(chain, chain[1:]):
                lines = graph.get_import_details(importer=a, imported=b)
                where = ", ".join(str(d["line_number"]) for d in lines)
                links.append(f"{a} -> {b} (line {where})")
            break
    return "; ".join(links) or ", ".join(part)


def test_no_import_cycle_even_through_imports_inside_functions():
    graph = _graph()
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(_describe(graph, part) for part in cycles)


def test_the_cycle_finder_sees_an_import_inside_a_function(tmp_path: Path, monkeypatch):
    package = tmp_path / "knot"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from knot import b\n")
    (package / "b.py").write_text("def late():\n    from knot import a\n\n    return a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from knot import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("knot", exclude_type_checking_imports=True, cache_dir=None)
    assert import_cycles(graph) == [["knot.a", "knot.b"]]


def test_the_layers_contract_holds(monkeypatch):
    """pyproject.toml's [tool.importlinter] contracts (`lint-imports`, as .ci/run runs it)."""
    cli = pytest.importorskip("importlinter.cli")
    monkeypatch.chdir(ROOT)
    # lint_imports configures logging with dictConfig, which disables every logger made before
    # (rim_bench's too, so later tests would see none of its lines): they are put back after.
    loggers = [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for logger in loggers:
        monkeypatch.setattr(logger, "disabled", logger.disabled)
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
