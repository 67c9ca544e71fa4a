"""Argument helpers shared by the command modules."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from slimkit.model import Model

C = TypeVar("C")

EPILOG = """models: an .onnx file, a Hugging Face folder (config.json + safetensors; loaded
with the head its config names, inputs from its config), package.module:factory or
file.py:factory (with --weights), or builtin:NAME (digits-mlp, digits-cnn, resnet18,
resnet18-cifar, mobilenetv2, minilm, smollm2); causal LMs also as a .gguf file or an
exported generation folder.
inputs: --input NAME:SHAPE:DTYPE per input (--input ids:1x16:int64 --input mask:1x16:int64),
--sample-inputs FILE.npz, or --input-shape 1x3x224x224 for one float input.
data: builtin:digits[:train|val|test], a .npz file, a .txt file (one sentence a line),
synthetic[:N] (shaped after the model's inputs)."""


def csv(kind: Callable[[str], object]) -> Callable[[str], tuple[object, ...]]:
    """An argparse type for comma-separated lists of ``kind``."""

    def parse(text: str) -> tuple[object, ...]:
        try:
            return tuple(kind(part) for part in text.split(",") if part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list") from None

    return parse


def model_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    """The model spec argument(s) with --weights and the input signature (--input-shape,
    --input, --sample-inputs) and --pooling."""
    p.add_argument("models" if many else "model", nargs="+" if many else None, metavar="MODEL",
                   help="model spec(s); see 'slimkit --help'")
    p.add_argument("--weights", help="weights (.safetensors or .pt/.pth) for a factory spec")
    signature_args(p)


def signature_args(p: argparse.ArgumentParser) -> None:
    """How a model's inputs are described on the command line."""
    p.add_argument("--input-shape", help="input shape of a model with one float input, e.g. "
                                         "1x3x224x224 (batch axis is dynamic)")
    p.add_argument("--input", action="append", metavar="NAME:SHAPE:DTYPE", dest="inputs",
                   help="one model input, e.g. input_ids:1x16:int64 (repeatable, in the order "
                        "the model takes them; batch axis dynamic; a named axis such as "
                        "1xseq is dynamic too; an optional 4th field bounds integer values)")
    p.add_argument("--sample-inputs", metavar="FILE.npz",
                   help="a .npz file with one array per input, named after it: gives the "
                        "input signature (and the examples export verifies on)")
    p.add_argument("--pooling", choices=["mean", "cls"],
                   help="make a Hugging Face encoder without a head return one embedding per "
                        "example (default: its own outputs, e.g. last_hidden_state)")


def load(args: argparse.Namespace, spec: str) -> Model:
    """Load ``spec`` with the --weights and input signature given on the command line."""
    from slimkit.errors import InputError
    from slimkit.load import load_model

    given, sample = getattr(args, "inputs", None), getattr(args, "sample_inputs", None)
    if given and sample:
        raise InputError("give the inputs once: --input or --sample-inputs, not both")
    return load_model(spec, weights=getattr(args, "weights", None),
                      input_shape=getattr(args, "input_shape", None),
                      inputs=sample or given, pooling=getattr(args, "pooling", None))


def config_from_args(cls: type[C], args: argparse.Namespace, section: str,
                     **overrides: Any) -> C:
    """The config dataclass ``cls`` from the arguments whose dest is ``SECTION.FIELD``: each
    flag maps onto one field (declare it with ``dest="section.field"``), so no command restates
    the fields. Lists become tuples; ``overrides`` win (values shared between two configs).

    Example:
        >>> from slimkit.prune import PruneConfig
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--ratio", type=float, dest="prune.ratio")
        >>> _ = p.add_argument("--exclude", action="append", default=[], dest="prune.exclude")
        >>> config_from_args(PruneConfig, p.parse_args(["--ratio", "0.3"]), "prune").ratio
        0.3
    """
    prefix = section + "."
    values = {key[len(prefix):]: tuple(value) if isinstance(value, list) else value
              for key, value in vars(args).items() if key.startswith(prefix)}
    values.update(overrides)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:  # a programming error in a command module, not a user error
        raise TypeError(f"{cls.__name__} has no fields {unknown}")
    return cls(**values)

