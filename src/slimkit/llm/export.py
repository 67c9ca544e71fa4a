"""Export a causal LM for generation: one ONNX graph for prefill and decode (dynamic sequence
and past lengths, ``past_key_values.N.key/value`` -> ``present.N.key/value``) in the folder
layout ONNX Runtime GenAI loads unchanged (``genai_config.json``, tokenizer files).

**Why the graph comes from ONNX Runtime GenAI's model builder.** The builder writes the fused
contrib operators ONNX Runtime runs fastest on CPU (GroupQueryAttention with rotary embedding
inside, SkipSimplifiedLayerNormalization, one packed QKV MatMul) and the GenAI config. The
alternative, ``torch.onnx.export`` of the HF model with an explicit cache, gives the same
logits (perplexity equal to 1e-7) but leaves attention, rotary and RMSNorm as many small ops
and stores the tied embedding twice (650 MB against 540 MB for SmolLM2). Measured side by side
(``benchmarks/bench_llm.py``, SmolLM2, 1 thread, Zen 4, loaded machine): prompt 128 -> TTFT 552
vs 448 ms, decode 17.1 vs 18.7 tok/s; prompt 512 -> 2539 vs 1958 ms, 14.2 vs 17.2 tok/s, both
run by slimkit's engine. So slimkit does not write its own exporter; what it adds is measured:
a last-token LM head for prefill (:mod:`slimkit.llm.graph`; TTFT 448-492 vs 633 ms for the
builder's graph as it is, decode unchanged), verification against torch (prefill and decode
logits, greedy tokens), perplexity/KL through the exported graph, a Python engine that batches
decode steps, and the benchmark.

The builder's MatMul weights stay plain initializers (``*.MatMul.weight``), so a weight-only
quantizer (ORT's ``MatMulNBitsQuantizer``) can swap them for MatMulNBits afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit._deps import require
from slimkit.errors import ExportError, InputError, OutputPathError
from slimkit.llm.graph import add_logits_to_keep
from slimkit.llm.load import GENAI_CONFIG, hf_module, load_generation_folder, save_hf_folder
from slimkit.llm.verify import VerifyConfig, verify_generation
from slimkit.model import Model

log = logging.getLogger(__name__)

# the architectures ORT GenAI 0.18's builder maps to its decoder builders and slimkit tests
# (tests/test_llm_export.py builds a tiny model of each); others are refused up front.
SUPPORTED = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "Phi3ForCausalLM": "phi3",
}
REPORT_FILE = "slimkit_export.json"


@dataclass(frozen=True)
class GenerationExportConfig:
    """How to build and how strictly to verify the generation folder.

    ``builder_options`` are passed to the builder as its ``--extra_options KEY=VALUE`` (e.g.
    ``{"shared_embeddings": "false"}``). ``last_token_head`` adds slimkit's ``logits_to_keep``
    input (:mod:`slimkit.llm.graph`): prefill computes the LM head for the last position only
    unless told otherwise; False keeps the builder's graph as it is.
    """

    precision: str = "fp32"
    last_token_head: bool = True
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    builder_options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.precision != "fp32":
            raise InputError(f"precision '{self.precision}' is not supported yet; use fp32 "
                             "(int4/int8 weight-only quantization comes with 'slimkit quantize')")


@dataclass(frozen=True)
class GenerationExportResult:
    folder: Path
    model: Model  # a handle on the exported folder
    report: dict[str, Any]


def export_for_generation(model: Model, folder: str | Path,
                          config: GenerationExportConfig | None = None) -> GenerationExportResult:
    """Build, verify against ``model`` and write a generation folder.

    Example:
        >>> import pathlib, tempfile
        >>> from slimkit.llm.load import load_causal_lm
        >>> from slimkit.testing.llm import tiny_llama_folder
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> r = export_for_generation(load_causal_lm(tiny_llama_folder(root)), root / "gen")
        >>> r.report["verification"]["same_greedy_tokens"], r.report["op_types"]["MatMul"] > 0
        (True, True)
    """
    config = config or GenerationExportConfig()
    out = check_generation_output(Path(folder).expanduser())
    hf = hf_module(model)
    architecture = check_supported(hf)
    if model.tokenizer is None:
        raise InputError(f"'{model.source}' has no tokenizer; a generation folder needs one "
                         "(tokenizer.json beside config.json)")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".slimkit-gen-", dir=out.parent) as tmp:
        built = Path(tmp) / "out"
        _build(model, Path(tmp), built, config)
        check_genai_layout(built)
        if config.last_token_head:
            add_logits_to_keep(built / "model.onnx")
        exported = load_generation_folder(built, name=f"{model.name}-onnx")
        verification = verify_generation(model, exported, config.verify)
        report = _report(model, architecture, built, verification, config, start)
        (built / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        built.rename(out)
    return GenerationExportResult(out, load_generation_folder(out, name=f"{model.name}-onnx"),
                                  report)


def check_supported(hf: Any) -> str:
    """The architecture name of ``hf``, or a one-line error naming the supported ones."""
    architecture = type(hf).__name__
    if architecture not in SUPPORTED:
        raise ExportError(f"exporting {architecture} for generation is not supported; "
                          f"supported: {', '.join(sorted(SUPPORTED))}")
    return architecture


def check_generation_output(out: Path, what: str = "the export") -> Path:
    """``out`` if a generation folder may be written there: new, empty, or a generation folder
    written before (replaced); checked before any work, so a bad path costs nothing."""
    if out.exists() and not (out.is_dir() and ((out / GENAI_CONFIG).is_file()
                                               or not any(out.iterdir()))):
        raise OutputPathError(f"'{out}' exists and is not an empty folder or a generation "
                              f"folder; choose a new folder for {what}")
    if not out.parent.is_dir():
        raise OutputPathError(f"cannot write '{out}': folder '{out.parent}' does not exist")
    return out


def _build(model: Model, tmp: Path, built: Path, config: GenerationExportConfig) -> None:
    """Write the fp32 weights as an HF folder and run the GenAI builder on it in-process
    (its chatter captured and logged at debug level)."""
    require("onnxruntime_genai", "exporting a causal LM for generation")
    from onnxruntime_genai.models import builder

    hf_folder = save_hf_folder(model, tmp / "hf")
    options = [f"{k}={v}" for k, v in config.builder_options]
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            extra = builder.parse_extra_options(None, str(hf_folder), str(built),
                                                config.precision, "cpu", str(tmp / "cache"),
                                                options)
            builder.create_model(None, str(hf_folder), str(built), config.precision, "cpu",
                                 str(tmp / "cache"), **extra)
    except Exception as exc:  # the builder raises bare Exceptions of many kinds
        log.debug("builder output:\n%s", chatter.getvalue())
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ExportError(f"ONNX Runtime GenAI's model builder failed on '{model.source}': "
                          f"{type(exc).__name__}: {first}") from None
    log.debug("builder output:\n%s", chatter.getvalue())


def check_genai_layout(folder: Path) -> None:
    """The graph's input/output names are the ones ``genai_config.json`` promises."""
    onnx = require("onnx", "checking an exported model")
    genai = json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8"))
    decoder = genai["model"]["decoder"]
    graph = onnx.load(str(folder / decoder["filename"]), load_external_data=False).graph
    names = {i.name for i in graph.input} | {o.name for o in graph.output}
    layers = int(decoder["num_hidden_layers"])
    wanted = [decoder["inputs"]["input_ids"], decoder["inputs"]["attention_mask"],
              decoder["outputs"]["logits"]]
    patterns = [decoder["inputs"]["past_key_names"], decoder["inputs"]["past_value_names"],
                decoder["outputs"]["present_key_names"], decoder["outputs"]["present_value_names"]]
    wanted += [pattern % i for i in range(layers) for pattern in patterns]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ExportError(f"the exported graph lacks {missing[:3]} named by {GENAI_CONFIG}")


def op_counts(folder: Path) -> dict[str, int]:
    """How many nodes of each op type the exported graph has."""
    onnx = require("onnx", "reading an exported model")
    genai = json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8"))
    graph = onnx.load(str(folder / genai["model"]["decoder"]["filename"]),
                      load_external_data=False).graph
    return dict(Counter(n.op_type for n in graph.node).most_common())


def _report(model: Model, architecture: str, built: Path, verification: dict[str, Any],
            config: GenerationExportConfig, start: float) -> dict[str, Any]:
    from importlib.metadata import version

    return {"source": model.source, "architecture": architecture, "precision": config.precision,
            "last_token_head": config.last_token_head,
            "builder": f"onnxruntime-genai {version('onnxruntime-genai')}",
            "op_types": op_counts(built), "verification": verification,
            "seconds": round(time.perf_counter() - start, 2)}
