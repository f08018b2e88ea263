"""Small renderers shared by the report and the gallery: number formats, Markdown / HTML tables, inlined
images and one self-contained HTML page (no external CSS, scripts or images)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from typing import Any

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
tr.sig td { background: #eef8ee; } tr.failed td { background: #fbeaea; }
.note { color: #666; font-size: 12px; } .warn { background: #fff4d6; border: 1px solid #e8c96a; padding: 0.5em 1em; }
img.plot { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.item { border: 1px solid #ddd; border-radius: 6px; padding: 0.8em 1em; margin: 1em 0; }
.frames img { height: 90px; margin: 2px; border: 1px solid #ccc; }
.synthetic { color: #a33; font-weight: bold; } code { background: #f4f4f4; padding: 0 3px; }
dl { display: grid; grid-template-columns: minmax(11em, max-content) 1fr; gap: 2px 1em; margin: 0.5em 0; } dt { color: #555; } dd { margin: 0; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def is_nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def num(v: Any, digits: int = 4) -> str:
    return "—" if is_nan(v) else f"{float(v):.{digits}f}"


def pm(mean: Any, std: Any, digits: int = 4) -> str:
    if is_nan(mean):
        return "—"
    return f"{float(mean):.{digits}f} ± {float(std):.{digits}f}" if not is_nan(std) else num(mean, digits)


def pct(v: Any, digits: int = 1) -> str:
    return "—" if is_nan(v) else f"{100 * float(v):+.{digits}f}%"


def interval(lo: Any, hi: Any, as_pct: bool = True, digits: int = 1) -> str:
    if is_nan(lo) or is_nan(hi):
        return "—"
    if as_pct:
        return f"[{pct(lo, digits)}, {pct(hi, digits)}]"
    return f"[{float(lo):+.{digits}f}, {float(hi):+.{digits}f}]"


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    table_id: str = "",
    row_classes: Sequence[str] | None = None,
    left: int = 2,
    left_last: bool = False,
) -> str:
    """`left`: the first columns are left-aligned (names), and the last one with `left_last`; cells are escaped."""
    ident = f' id="{esc(table_id)}"' if table_id else ""

    def cls_of(i: int) -> str:
        return "l" if i < left or (left_last and i == len(header) - 1) else ""

    th = "".join(f'<th class="{cls_of(i)}">{esc(h)}</th>' for i, h in enumerate(header))
    body = []
    for j, r in enumerate(rows):
        cls = f' class="{esc(row_classes[j])}"' if row_classes and row_classes[j] else ""
        tds = "".join(f'<td class="{cls_of(i)}">{esc(v)}</td>' for i, v in enumerate(r))
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table{ident}><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>\n"


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def img(data: bytes, alt: str, cls: str = "plot", mime: str = "image/png") -> str:
    return f'<img class="{esc(cls)}" alt="{esc(alt)}" src="{data_uri(data, mime)}">'


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head>\n<body>\n<h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
    )
