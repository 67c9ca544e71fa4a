"""The run report: named sections of plain data, written as JSON (for machines) and Markdown (for
people and pull requests). Techniques add their own sections; the HTML report reads the JSON."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.io import jsonable, write_text_atomic
from slimkit.report.format import fmt

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
                "sections": jsonable(self.sections), "environment": jsonable(self.environment)}

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
            from slimkit.report.html import RunDocument, write_html_report

            doc = RunDocument.from_report(self.to_dict(), "report.json")
            paths["html"] = write_html_report(doc, out / "report.html")
        return paths


def _markdown(content: Any) -> list[str]:
    content = jsonable(content)
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
