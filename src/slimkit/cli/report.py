"""``slimkit report``."""

from __future__ import annotations

import argparse

HELP = "build the self-contained HTML report of a run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR",
                   help="a run folder (report.json, *.report.json, diff.json, advice.json) or "
                        "one report file")
    p.add_argument("-o", "--output", default=None,
                   help="the .html file to write (default: RUN_DIR/report.html)")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from slimkit.cli.console import console
    from slimkit.report.html import load_run, write_html_report

    source = Path(args.run)
    output = Path(args.output) if args.output else (
        source / "report.html" if source.is_dir() else source.with_suffix(".html"))
    doc = load_run(source)
    path = write_html_report(doc, output)
    for warning in doc.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"wrote {path} ({len(doc.sections)} sections from {', '.join(doc.sources)})")
