"""The run report: named sections of plain data, written as JSON (for machines) and Markdown (for
people and pull requests). Techniques add their own sections; the HTML report reads the JSON."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.io import write_text_atomic

REPORT_FORMAT = "slimkit-report"
REPORT_VERSION = 1  # bump when a section's layout changes incompatibly


@dataclass
class Report:
    """An ordered set of sections, the environment that produced them and the seed.

    Example:
        >>> r = Report("demo")
        >>> r.add("metrics", {"accuracy": 0.99})
        >>> "| accuracy | 0.99 |" in r.to_markdown()
        True
    """

    title: str
    sections: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def add(self, name: str, content: Any) -> None:
        self.sections[name] = content

    def to_dict(self) -> dict[str, Any]:
        return {"format": REPORT_FORMAT, "version": REPORT_VERSION,
                "title": self.title, "created": self.created, "seed": self.seed,
                "sections": _jsonable(self.sections), "environment": _jsonable(self.environment)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", "", f"Created {self.created}; seed {self.seed}.", ""]
        for name, content in self.sections.items():
            lines += [f"## {name.replace('_', ' ').capitalize()}", "", *_markdown(content), ""]
        if self.environment:
            lines += ["## Environment", "", *_markdown(self.environment), ""]
        return "\n".join(lines)

    def write(self, folder: str | Path, html: bool = False) -> dict[str, Path]:
        """Write ``report.json`` and ``report.md`` (and with ``html``, the self-contained
        ``report.html``) into ``folder``, atomically, each."""
        out = Path(folder)
        paths = {
            "json": write_text_atomic(out / "report.json", self.to_json() + "\n"),
            "markdown": write_text_atomic(out / "report.md", self.to_markdown()),
        }
        if html:
            from slimkit.report_html import RunDocument, write_html_report

            doc = RunDocument.from_report(self.to_dict(), "report.json")
            paths["html"] = write_html_report(doc, out / "report.html")
        return paths


def _jsonable(value: Any) -> Any:
    """Plain JSON types; non-finite floats become strings ('inf') so the JSON stays strict."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return str(value)


def fmt(value: Any) -> str:
    """A compact human form of a value for tables: 4 significant digits, thousands separated
    (no exponent for large numbers: people read 19,140/s, not 1.914e+04).

    Example:
        >>> fmt(19140.4), fmt(0.052531), fmt(15766), fmt(2026), fmt(5.7e-06)
        ('19,140', '0.05253', '15,766', '2026', '5.7e-06')
    """
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e3 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 1e4 else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    return str(value)


def _markdown(content: Any) -> list[str]:
    content = _jsonable(content)
    if isinstance(content, list) and content and all(isinstance(r, dict) for r in content):
        keys = list(dict.fromkeys(k for row in content for k in row))
        rows = [[fmt(row.get(k, "")) for k in keys] for row in content]
        return _table(keys, rows)
    if isinstance(content, dict):
        return _table(["key", "value"], [[str(k), fmt(v)] for k, v in content.items()])
    if isinstance(content, list):
        return [f"- {fmt(item)}" for item in content]
    return [str(content)]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(r) for r in rows)]
