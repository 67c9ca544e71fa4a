"""The page: escaping, tables, the registries of section renderers and summary views, and the
self-contained HTML document (inline CSS and SVG, no script, no network access)."""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slimkit.io import jsonable
from slimkit.registry import Registry
from slimkit.report.format import fmt
from slimkit.report.html.load import RunDocument
from slimkit.report.html.style import CSS

log = logging.getLogger(__name__)
MAX_ROWS = 40  # longer tables show this many rows and fold the rest into a <details>

SectionRenderer = Callable[[Any, RunDocument], str]
# section name (as in report.json) -> its renderer; techniques register theirs here
SECTIONS: Registry[SectionRenderer] = Registry("report section")


@dataclass(frozen=True)
class View:
    """A summary block of the page, gathered from whichever sections carry its data.

    ``render`` returns None when the run has no data for it; the page then marks the view as
    missing and says what would produce it (``missing``).
    """

    title: str
    render: Callable[[RunDocument], str | None]
    missing: str
    order: int = 50


VIEWS: Registry[View] = Registry("report view")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def table(rows: list[dict[str, Any]], columns: list[str] | None = None,
          caption: str | None = None) -> str:
    """An HTML table of ``rows``; past ``MAX_ROWS`` the rest folds into a <details>."""
    if not rows:
        return '<p class="muted">no rows</p>'
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{esc(c.replace('_', ' '))}</th>" for c in columns)

    def body(part: list[dict[str, Any]]) -> str:
        return "".join(
            "<tr>" + "".join(_cell(row.get(c, "")) for c in columns) + "</tr>" for row in part)

    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    out = (f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead>'
           f"<tbody>{body(rows[:MAX_ROWS])}</tbody></table></div>")
    if len(rows) > MAX_ROWS:
        out += (f"<details><summary>{len(rows) - MAX_ROWS} more rows</summary>"
                f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                f"<tbody>{body(rows[MAX_ROWS:])}</tbody></table></div></details>")
    return out


def _cell(value: Any) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{esc(fmt(value))}</td>' if numeric else f"<td>{esc(fmt(value))}</td>"


def generic(content: Any, doc: RunDocument | None = None) -> str:
    """Any JSON content: tables for flat dicts and lists of dicts, nested blocks otherwise."""
    content = jsonable(content)
    if isinstance(content, list) and content and all(isinstance(r, dict) for r in content):
        return table(content)
    if isinstance(content, dict):
        flat = {k: v for k, v in content.items() if not _nested(v)}
        parts = [table([{"key": k, "value": v} for k, v in flat.items()])] if flat else []
        for key, value in content.items():
            if _nested(value):
                parts.append(f'<div class="sub"><h4>{esc(key.replace("_", " "))}</h4>'
                             f"{generic(value)}</div>")
        return "".join(parts) or '<p class="muted">empty</p>'
    if isinstance(content, list):
        return "<ul>" + "".join(f"<li>{esc(fmt(item))}</li>" for item in content) + "</ul>"
    return f"<p>{esc(content)}</p>"


def _nested(value: Any) -> bool:
    if isinstance(value, dict):
        return any(isinstance(v, (dict, list)) for v in value.values()) or len(value) > 6
    return isinstance(value, list) and any(isinstance(v, dict) for v in value)


def render_section(name: str, content: Any, doc: RunDocument) -> str:
    """The registered renderer of ``name`` (``"quantize (2)"`` uses ``quantize``'s), falling
    back to plain tables, and to a marked plain table when the renderer does not understand
    the content (a report from another version)."""
    base = re.sub(r" \(\d+\)$", "", name)
    if base not in SECTIONS:
        return generic(content, doc)
    try:
        return SECTIONS.get(base)(content, doc)
    except Exception as exc:  # a layout from another version must not lose the whole page
        log.warning("section %s: renderer failed (%s: %s)", name, type(exc).__name__, exc)
        return (f'<p class="warn">This section\'s layout was not recognised '
                f"({esc(type(exc).__name__)}: {esc(exc)}); written by another slimkit version? "
                "Shown as plain data.</p>"
                + generic(content, doc))


def render_view(view: View, doc: RunDocument) -> str:
    try:
        body = view.render(doc)
    except Exception as exc:  # same reason as in render_section
        log.warning("view %s failed (%s: %s)", view.title, type(exc).__name__, exc)
        body = (f'<p class="warn">could not be drawn from this run\'s data '
                f"({esc(type(exc).__name__)}: {esc(exc)}); written by another version?</p>")
    if body is None:
        body = f'<p class="missing">Missing from this run: {esc(view.missing)}</p>'
    return f'<section id="{anchor(view.title)}"><h2>{esc(view.title)}</h2>{body}</section>'


NOT_DRAWN = ('class="warn">could not be drawn', 'class="missing">Missing from this run',
             "layout was not recognised")


def undrawn(page: str) -> list[str]:
    """Titles of the page's sections that say they could not be drawn or have no data.

    Example:
        >>> undrawn(build_html(RunDocument(title="t", sections={})))[:1]
        ['Before and after']
    """
    blocks = re.findall(r'<section id="[^"]*"><h[23]>(.*?)</h[23]>(.*?)</section>', page, re.S)
    return [html.unescape(title) for title, body in blocks
            if any(marker in body for marker in NOT_DRAWN)]


def build_html(doc: RunDocument) -> str:
    """The whole page for ``doc``: summary views first, then every section in detail."""
    views = sorted((VIEWS.get(n) for n in VIEWS.names()), key=lambda v: (v.order, v.title))
    blocks = [render_view(v, doc) for v in views]
    details = [f'<section id="s-{anchor(name)}"><h3>{esc(name.replace("_", " "))}</h3>'
               f"{render_section(name, content, doc)}</section>"
               for name, content in doc.sections.items()]
    nav = "".join(f'<a href="#{anchor(v.title)}">{esc(v.title)}</a>' for v in views)
    warnings = "".join(f'<p class="warn">{esc(w)}</p>' for w in doc.warnings)
    data = json.dumps(jsonable({"title": doc.title, "created": doc.created, "seed": doc.seed,
                                 "sections": doc.sections, "environment": doc.environment}))
    data = data.replace("</", "<\\/")  # cannot close the script element early
    meta = f"created {esc(doc.created or 'unknown')} · seed {esc(doc.seed)}"
    if doc.sources:
        meta += " · from " + esc(", ".join(doc.sources))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(doc.title)}</title><style>{CSS}</style></head>
<body><header><h1>{esc(doc.title)}</h1><p class="muted">{meta}</p>{warnings}
<nav>{nav}<a href="#details">All sections</a></nav></header>
<main>{''.join(blocks)}
<section id="details"><h2>All sections</h2>{''.join(details) or '<p class="missing">none</p>'}
</section></main>
<footer class="muted">Written by slimkit. The same data as JSON is embedded below
(script id "slimkit-data").</footer>
<script type="application/json" id="slimkit-data">{data}</script>
</body></html>
"""
