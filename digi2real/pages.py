"""The report's pages: the certificate and the dataset card as small HTML pages. Snakemake's
report shows an HTML result on the page itself (CSV and JSON only as download links), so the
headline figures are read where the figures are."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from digi2real.atomic import atomic_path

STYLE = """
body { font-family: sans-serif; font-size: 14px; margin: 1em; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
p.lead { font-size: 15px; } p.note { color: #555; }
"""


@dataclass
class Table:
    heading: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)
    note: str = ""


def shown(value) -> str:
    """A cell: numbers to 4 significant places, integers with thousands separators, null as
    a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# A warning a reader cannot miss (the demo's figures are not results): framed, bold, in red.
WARNING_STYLE = (
    "border: 2px solid #b00; background: #fee; color: #900; padding: 8px; "
    "font-weight: bold; font-size: 15px;"
)


def render(
    title: str, lead: list[str], tables: list[Table], warnings: list[str] | tuple = ()
) -> str:
    """The page: `warnings` right under the title, before anything else, then the lead and
    the tables."""
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [
        f'<p class="warning" style="{WARNING_STYLE}">{html.escape(line)}</p>' for line in warnings
    ]
    parts += [f'<p class="lead">{html.escape(line)}</p>' for line in lead]
    for table in tables:
        parts.append(f"<h2>{html.escape(table.heading)}</h2><table><tr>")
        parts += [f"<th>{html.escape(column)}</th>" for column in table.columns]
        parts.append("</tr>")
        for row in table.rows:
            cells = []
            for value in row:
                number = isinstance(value, int | float) and not isinstance(value, bool)
                css = ' class="number"' if number else ""
                cells.append(f"<td{css}>{html.escape(shown(value))}</td>")
            parts.append(f"<tr>{''.join(cells)}</tr>")
        parts.append("</table>")
        if table.note:
            parts.append(f'<p class="note">{html.escape(table.note)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_page(
    path: Path,
    title: str,
    lead: list[str],
    tables: list[Table],
    warnings: list[str] | tuple = (),
) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(render(title, lead, tables, warnings), encoding="utf-8")
