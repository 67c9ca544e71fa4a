"""Weight-only int4/int8 quantization of causal LMs to ONNX Runtime's MatMulNBits: round to
nearest, GPTQ, AWQ, HQQ and the GGUF grid, per-layer mixed precision by measured sensitivity,
the LM head and embeddings as decisions of their own. One verb, :func:`quantize_weights`."""

from slimkit._lazy import lazy_exports

_API = {
    "quantize_weights": "slimkit.llm.wquant.api", "WeightQuantResult": "slimkit.llm.wquant.api",
    "fake_quantize": "slimkit.llm.wquant.api",
    "WeightQuantConfig": "slimkit.llm.wquant.config",
    "AdvancedWeightQuantConfig": "slimkit.llm.wquant.config",
    "Method": "slimkit.llm.wquant.config", "Precision": "slimkit.llm.wquant.config",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports("slimkit.llm.wquant", _API, globals())
