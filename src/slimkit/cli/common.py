"""Argument helpers shared by the command modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from slimkit.model import Model

EPILOG = """models: an .onnx file, a Hugging Face folder (config.json + safetensors),
package.module:factory or file.py:factory (with --weights), or builtin:NAME
(digits-mlp, digits-cnn, resnet18, resnet18-cifar, mobilenetv2, minilm, smollm2);
causal LMs also as a .gguf file or an exported generation folder.
data: builtin:digits[:train|val|test], a .npz file, a .txt file (one sentence a line),
synthetic[:N]."""


def csv(kind: Callable[[str], object]) -> Callable[[str], tuple[object, ...]]:
    """An argparse type for comma-separated lists of ``kind``."""

    def parse(text: str) -> tuple[object, ...]:
        try:
            return tuple(kind(part) for part in text.split(",") if part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list") from None

    return parse


def model_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    """The model spec argument(s) with --weights and --input-shape."""
    p.add_argument("models" if many else "model", nargs="+" if many else None, metavar="MODEL",
                   help="model spec(s); see 'slimkit --help'")
    p.add_argument("--weights", help="weights (.safetensors or .pt/.pth) for a factory spec")
    p.add_argument("--input-shape", help="input shape, e.g. 1x3x224x224 (batch axis is dynamic)")


def load(args: argparse.Namespace, spec: str) -> Model:
    """Load ``spec`` with the --weights/--input-shape given on the command line."""
    from slimkit.load import load_model

    return load_model(spec, weights=args.weights, input_shape=args.input_shape)
