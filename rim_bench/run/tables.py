"""The tables and the page every results command writes (`report`, `compare`, `sweep`, `suite`):
one Markdown table writer, one run-cost row, one HTML page style."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable

COST_HEADERS = ("seconds", "images/s", "peak RSS (MB)", "peak CUDA (MB)")
WRITTEN_BY = "<!-- written by rim-bench -->"  # in the first lines of each page it writes


def markdown_table(header: list[str], rows: list[list[str]],
                   escape: Callable[[str], str] = lambda cell: cell.replace("|", "\\|")) -> list[str]:
    """The lines of a Markdown table: `header` (a ``|`` in it escaped), the rule, one line per row, each
    cell through `escape` (default: a ``|`` escaped alone; `md_escape` for names from data)."""
    def line(cells: list[str], escape: Callable[[str], str]) -> str:
        return "| " + " | ".join(escape(str(c)) for c in cells) + " |"

    return [line(header, lambda cell: cell.replace("|", "\\|")), "|" + "---|" * len(header),
            *(line(row, escape) for row in rows)]


def run_cost(metrics: dict) -> dict:
    """What a run cost, from its metrics.json: wall seconds, throughput over the test loop
    (images/s), peak host RSS and peak CUDA allocation (MB); None where the run did not
    record it (CUDA unused, or a metrics.json from an older rim-bench)."""
    memory = _part(metrics, "peak_memory_mb")
    cuda = [v for v in _part(memory, "cuda_max_allocated").values() if finite_number(v) is not None]
    return {
        "seconds": finite_number(_part(metrics, "seconds").get("total")),
        "images_per_second": finite_number(_part(metrics, "throughput").get("images_per_second")),
        "peak_rss_mb": finite_number(_part(memory, "host_rss").get("total")),
        "peak_cuda_mb": max(cuda) if cuda else None,
    }


def _part(record: dict, key: str) -> dict:
    """``record[key]`` if it is a mapping, else empty: a hand-edited file's list or number there is left out."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def finite_number(value: object) -> float | None:
    """`value` if it is a finite number (not a bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def cost_cells(cost: dict) -> list[str]:
    """`run_cost`'s numbers as table cells in `COST_HEADERS` order ("-" where missing)."""
    formats = (("seconds", ".1f"), ("images_per_second", ".2f"), ("peak_rss_mb", ".0f"), ("peak_cuda_mb", ".0f"))
    return ["-" if cost.get(k) is None else format(cost[k], f) for k, f in formats]


def md_escape(text: str) -> str:
    """`text` (a run or class name) as literal Markdown, table cells included: its Markdown-significant
    characters backslash-escaped, ``<`` and ``>`` as entities (a raw tag would pass through), newlines as spaces."""
    text = html.escape(" ".join(str(text).splitlines()), quote=False)
    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", text)


def html_page(body: str) -> str:
    """A whole HTML page around `body`, in the report's style (the suite page uses it too)."""
    return f"""<!doctype html>
{WRITTEN_BY}
<html><head><meta charset="utf-8"><title>rim-bench report</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
.bars {{ width: 600px; }} .bar {{ display: flex; align-items: center; height: 18px; margin: 2px 0; }}
.name {{ width: 160px; flex: none; font-size: 12px; }}
.fill {{ background: #4a7ab5; height: 12px; display: inline-block; }}
.value {{ font-size: 11px; margin-left: 4px; }} img {{ max-width: 100%; margin: 6px 0; display: block; }}
.group {{ display: flex; align-items: center; margin: 4px 0; }} .group > div {{ flex: 1; }}
.group .bar {{ height: 14px; margin: 1px 0; }} .legend {{ font-size: 12px; margin: 4px 0; }}
.key {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 10px; }}
.toc {{ list-style: none; padding-left: 0; }} .toc3 {{ margin-left: 1.5em; }}
</style></head><body>
{body}
</body></html>
"""
