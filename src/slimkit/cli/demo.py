"""``slimkit demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the whole pipeline on the built-in digits CNN"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("slimkit-demo"),
                   help="output folder for the ONNX file and report.json/report.md "
                        "(default ./slimkit-demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="short benchmark (indicative numbers)")


def run(args: argparse.Namespace) -> None:
    from slimkit.cli.console import print_demo
    from slimkit.demo.run import DemoConfig, run_demo

    report = run_demo(DemoConfig(out=args.out, seed=args.seed, quick=args.quick))
    print_demo(report, {"json": args.out / "report.json", "markdown": args.out / "report.md",
                        "html": args.out / "report.html"})
