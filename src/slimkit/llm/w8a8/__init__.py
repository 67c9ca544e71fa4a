"""W8A8 for causal LMs on CPU: SmoothQuant folded exactly into the model (RMSNorm -> q/k/v and
gate/up, v -> o across GQA groups, up -> down through the gated product), int8 weights per
output channel and dynamic int8 activations per token in the ONNX generation folder (fused by
ONNX Runtime into its u8 x s8 integer GEMM), an optional int8 KV cache, verified against the
fp32 model and timed side by side.

Names load lazily: ``import slimkit.llm.w8a8`` imports neither torch's models nor onnxruntime.
"""

from slimkit._lazy import lazy_exports

_API = {
    "quantize_w8a8": "slimkit.llm.w8a8.api", "W8A8Result": "slimkit.llm.w8a8.api",
    "W8A8Config": "slimkit.llm.w8a8.config", "AdvancedW8A8": "slimkit.llm.w8a8.config",
    "SpeedConfig": "slimkit.llm.w8a8.config", "Smoothing": "slimkit.llm.w8a8.config",
    "Activations": "slimkit.llm.w8a8.config", "KVCache": "slimkit.llm.w8a8.config",
    "Head": "slimkit.llm.w8a8.config",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports("slimkit.llm.w8a8", _API, globals())
