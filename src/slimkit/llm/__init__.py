"""Causal language models on CPU: load (HF folders, GGUF, ``builtin:smollm2``), evaluate
(perplexity, KL and top-1 agreement against a reference), export for generation (ONNX with a
KV cache in ONNX Runtime GenAI's layout, verified against torch), and generate (a reusable
engine with batched decode steps, torch or ONNX Runtime); prune (``prune_llm``: Wanda,
SparseGPT, 2:4, GQA-consistent width, depth) and recover by distillation (``distill_llm``);
quantize weights only to int4/int8 MatMulNBits (``quantize_weights``: RTN, GPTQ, AWQ, HQQ, the
GGUF grid) or weights and activations to int8 (``quantize_w8a8``: SmoothQuant).

Names load lazily: ``import slimkit.llm`` imports neither transformers nor onnxruntime.
"""

from slimkit._lazy import lazy_exports

_API = {
    "load_causal_lm": "slimkit.llm.load",
    "perplexity": "slimkit.llm.evaluate", "compare": "slimkit.llm.evaluate",
    "PerplexityConfig": "slimkit.llm.evaluate",
    "export_for_generation": "slimkit.llm.export",
    "GenerationExportConfig": "slimkit.llm.export",
    "verify_generation": "slimkit.llm.verify", "VerifyConfig": "slimkit.llm.verify",
    "generate": "slimkit.llm.generate", "GenerationConfig": "slimkit.llm.generate",
    "SamplingConfig": "slimkit.llm.sampling",
    "Engine": "slimkit.llm.engine", "SequenceState": "slimkit.llm.engine",
    "CausalLMRuntime": "slimkit.llm.runtime", "open_runtime": "slimkit.llm.runtime",
    "load_text": "slimkit.llm.text",
    "quantize_weights": "slimkit.llm.wquant", "WeightQuantConfig": "slimkit.llm.wquant",
    "quantize_w8a8": "slimkit.llm.w8a8.api", "W8A8Config": "slimkit.llm.w8a8.config",
    "prune_llm": "slimkit.llm.prune", "LLMPruneConfig": "slimkit.llm.prune",
    "distill_llm": "slimkit.llm.distill", "LLMDistillConfig": "slimkit.llm.distill",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports("slimkit.llm", _API, globals())
