"""Causal-LM helpers of the command modules (not a command itself)."""

from __future__ import annotations

import argparse
from pathlib import Path


def is_causal_lm_spec(spec: str) -> bool:
    """Whether ``spec`` names a causal LM, decided without loading it."""
    from slimkit.llm.load import is_causal_lm_config, is_generation_folder

    path = Path(spec).expanduser()
    return (spec == "builtin:smollm2" or spec.endswith(".gguf") or is_generation_folder(path)
            or (path.is_dir() and is_causal_lm_config(path)))


def export_causal_lm(args: argparse.Namespace) -> None:
    """``slimkit export`` of a causal LM: a verified generation folder."""
    from slimkit.cli.console import console
    from slimkit.errors import InputError
    from slimkit.llm.export import GenerationExportConfig, export_for_generation
    from slimkit.llm.verify import VerifyConfig
    from slimkit.load import load_model

    if args.data:
        raise InputError("--data does not apply to a causal LM: it is verified on prompts cut "
                         "from real text (prefill and 16 decode steps)")
    atol = max(args.atol, 1e-3)  # logits of a deep LM in fp32: 1e-4 is below their noise
    config = GenerationExportConfig(verify=VerifyConfig(atol=atol, rtol=args.rtol))
    model = load_model(args.model)
    result = export_for_generation(model, args.output, config)
    v = result.report["verification"]
    console.print(f"wrote {result.folder} (ONNX Runtime GenAI layout); verified against torch on "
                  f"{v['prompts']} prompts, prefill + {v['decode_steps']} decode steps: max abs "
                  f"logit diff {v['max_abs_logit_diff']:.3g}, same greedy tokens")
