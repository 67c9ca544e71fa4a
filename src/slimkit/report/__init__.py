"""The run report: named sections of plain data written as JSON and Markdown (``document``),
numbers as people read them (``format``) and the self-contained HTML page (``html``)."""

from slimkit.report.document import REPORT_FORMAT, REPORT_VERSION, Report
from slimkit.report.format import fmt

__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "Report", "fmt"]
