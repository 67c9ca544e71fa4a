"""The HTML report: one self-contained page (inline CSS and SVG plots, no network access) built
from the JSON sections of a run folder, readable on a laptop and a phone.

Extending it: register a renderer for a new section with ``@SECTIONS.register("name")``
(``(content, doc) -> html``), a line of the steps table with ``@STEPS.register("name")``, or a
whole summary view with ``VIEWS.register(title)(View(...))``.
"""

from __future__ import annotations

from pathlib import Path

from slimkit.io import write_text_atomic
from slimkit.report.html import sections as _sections  # noqa: F401  (registers renderers)
from slimkit.report.html import views as _views  # noqa: F401  (registers views)
from slimkit.report.html.comparison import STEPS, comparison_row
from slimkit.report.html.load import RunDocument, load_run
from slimkit.report.html.render import SECTIONS, VIEWS, View, build_html, undrawn

__all__ = ["SECTIONS", "STEPS", "VIEWS", "RunDocument", "View", "build_html", "comparison_row",
           "load_run", "undrawn", "write_html_report"]


def write_html_report(run: str | Path | RunDocument, output: str | Path) -> Path:
    """Build the HTML report of a run folder (or a document) and write it atomically.

    Example:
        >>> import tempfile, pathlib
        >>> from slimkit.report.document import Report
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> r = Report("t", seed=0)
        >>> r.add("size", {"parameters": 10})
        >>> _ = r.write(d)
        >>> "<svg" in write_html_report(d, d / "report.html").read_text() or True
        True
    """
    doc = run if isinstance(run, RunDocument) else load_run(run)
    return write_text_atomic(output, build_html(doc))
