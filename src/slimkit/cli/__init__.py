"""The ``slimkit`` command line: parse, call one public function, print. No logic here.

Each command is one module of this package with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int | None``; ``COMMANDS`` lists them in the order ``--help`` shows them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from slimkit.cli.common import EPILOG
from slimkit.errors import SlimkitError

COMMANDS = ("demo", "export", "bench", "analyze", "quantize", "prune", "distill", "lowrank",
            "compress", "compact", "evaluate", "perplexity", "generate", "diff", "report",
            "serve", "tune", "zoo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slimkit", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Make trained neural networks smaller and faster, with measured, "
                    "verified reports.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"slimkit.cli.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from slimkit.progress import set_quiet

    set_quiet(args.quiet)
    try:
        code = args._run(args)
    except SlimkitError as exc:
        if args.debug:
            raise
        print(f"slimkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("slimkit: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
