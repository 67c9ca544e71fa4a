"""Fail unless the demo wrote report.json, report.md and report.html with every view drawn."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from slimkit.report.html import undrawn

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "slimkit-demo")
missing = [n for n in ("report.json", "report.md", "report.html") if not (folder / n).is_file()]
if missing:
    sys.exit(f"ci: the demo did not write {missing} in {folder}")
sections = json.loads((folder / "report.json").read_text())["sections"]
not_drawn = undrawn((folder / "report.html").read_text())
if not_drawn:
    sys.exit(f"ci: report.html has sections that were not drawn: {not_drawn}")
print(f"ci: demo report complete ({len(sections)} sections, every view drawn)")
