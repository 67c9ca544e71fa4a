"""Model statistics: parameters (and non-zero ones), MACs by layer, size on disk (and after
generic compression), and peak memory of one forward pass."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

from slimkit.model import Model, eval_mode

T = TypeVar("T")

# ONNX ops whose MACs are counted (the dense compute; element-wise ops are memory-bound)
MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "MatMulInteger", "QLinearConv",
           "QLinearMatMul", "ConvInteger")


@dataclass(frozen=True)
class LayerCost:
    name: str
    type: str
    macs: int
    params: int


@dataclass
class ModelStats:
    parameters: int
    nonzero_parameters: int
    macs: int
    size_bytes: int
    compressed_bytes: int
    input_shapes: dict[str, list[int]]
    layers: list[LayerCost] = field(default_factory=list)
    params_by_type: dict[str, int] = field(default_factory=dict)
    peak_memory_mb: float | None = None

    def macs_by_type(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for layer in self.layers:
            totals[layer.type] = totals.get(layer.type, 0) + layer.macs
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def top_layers(self, n: int = 10) -> list[LayerCost]:
        return sorted(self.layers, key=lambda layer: -layer.macs)[:n]

    def to_dict(self, layers: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not layers:
            d.pop("layers")
        d["macs_by_type"] = self.macs_by_type()
        d["sparsity"] = 1.0 - self.nonzero_parameters / max(self.parameters, 1)
        return d


def model_stats(model: Model, batch: int = 1, sequence: int = 128,
                memory: bool = False) -> ModelStats:
    """Statistics of ``model`` at one input of ``batch`` examples (text: ``sequence`` tokens).

    Example:
        >>> from slimkit import load_model
        >>> s = model_stats(load_model("builtin:resnet18"))
        >>> round(s.macs / 1e9, 2), s.parameters
        (1.81, 11689512)
    """
    from slimkit.data import synthetic

    sample = synthetic(model.inputs, batch, seed=0, dynamic=sequence).first_batch(batch)
    stats = _torch_stats(model, sample) if model.module is not None else _onnx_stats(model, sample)
    if memory:
        stats.peak_memory_mb = peak_forward_memory_mb(model, sample)
    return stats


def compressed_size(payload: bytes) -> int:
    """Size after zlib level 6: what a generic compressor (zip, gzip) makes of the file."""
    return len(zlib.compress(payload, 6))


def _torch_stats(model: Model, sample: dict[str, np.ndarray]) -> ModelStats:
    import torch
    from safetensors.torch import save

    module = model.require_module("statistics")
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    payload = save(_dedupe_shared(state))
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    nonzero = int(sum(int(torch.count_nonzero(p)) for p in params))
    layers = _torch_layer_macs(module, model.torch_args(sample))
    by_type: dict[str, int] = {}
    for sub in module.modules():
        own = sum(p.numel() for p in sub.parameters(recurse=False))
        if own:
            by_type[type(sub).__name__] = by_type.get(type(sub).__name__, 0) + own
    return ModelStats(total, nonzero, sum(layer.macs for layer in layers), len(payload),
                      compressed_size(payload), {k: list(v.shape) for k, v in sample.items()},
                      layers, _sorted_desc(by_type))


def _sorted_desc(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _dedupe_shared(state: dict[str, Any]) -> dict[str, Any]:
    """safetensors refuses tensors that share memory (tied weights); keep the first of each."""
    seen: set[int] = set()
    unique = {}
    for key, tensor in state.items():
        ptr = tensor.data_ptr()
        if ptr in seen and tensor.numel():
            continue
        seen.add(ptr)
        unique[key] = tensor.clone() if not tensor.is_contiguous() else tensor
    return unique


def _torch_layer_macs(module: Any, args: tuple[Any, ...]) -> list[LayerCost]:
    """MACs per module from torch's FlopCounterMode (flops / 2), each module keeping the work of
    its own ops (attention matmuls land on the attention module, not on its children)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()  # counting must not update BatchNorm statistics of a model in train mode
    # the counter's module tracker hooks tensors that require grad; a view of a parameter
    # taken under no_grad (DeBERTa's relative embeddings) has none: count without grads
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(*args)
    finally:
        module.train(was_training)
        for param, flag in flags:
            param.requires_grad_(flag)
    counts = counter.get_flop_counts()
    root = type(module).__name__
    totals = {
        ("" if key == root else key[len(root) + 1:]): sum(ops.values())
        for key, ops in counts.items() if key == root or key.startswith(root + ".")
    }
    own = dict(totals)
    for name, flops in totals.items():
        if name:
            own[_nearest_counted_ancestor(name, totals)] -= flops
    modules = dict(module.named_modules())
    layers = []
    for name, flops in own.items():
        if flops > 0 and name in modules:
            sub = modules[name]
            n_params = sum(p.numel() for p in sub.parameters(recurse=False))
            layers.append(LayerCost(name or root, type(sub).__name__, flops // 2, n_params))
    return layers


def _nearest_counted_ancestor(name: str, totals: dict[str, int]) -> str:
    parent = name
    while parent:
        parent = parent.rpartition(".")[0]
        if parent in totals:
            return parent
    return ""


def _onnx_stats(model: Model, sample: dict[str, np.ndarray]) -> ModelStats:
    import onnx
    from onnx import numpy_helper

    assert model.onnx_path is not None  # guaranteed by Model for non-torch models
    payload = model.onnx_path.read_bytes()
    proto = onnx.load_from_string(payload)
    total = nonzero = 0
    init_sizes: dict[str, int] = {}
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        init_sizes[init.name] = int(array.size)
        if array.size > 1 and (array.dtype.kind == "f" or array.dtype.itemsize == 1):
            total += int(array.size)
            nonzero += int(np.count_nonzero(array))
    layers = _onnx_layer_macs(proto, sample, init_sizes)
    by_type: dict[str, int] = {}
    for node in proto.graph.node:
        own = sum(init_sizes.get(name, 0) for name in node.input if init_sizes.get(name, 0) > 1)
        if own:
            by_type[node.op_type] = by_type.get(node.op_type, 0) + own
    return ModelStats(total, nonzero, sum(layer.macs for layer in layers), len(payload),
                      compressed_size(payload), {k: list(v.shape) for k, v in sample.items()},
                      layers, _sorted_desc(by_type))


def _onnx_layer_macs(proto: Any, sample: dict[str, np.ndarray],
                     init_sizes: dict[str, int]) -> list[LayerCost]:
    """MACs of the dense ops from shapes inferred at the sample's concrete input shapes."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for value in fixed.graph.input:
        if value.name in sample:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, sample[value.name].shape, strict=False):
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
    inferred = _infer_shapes(fixed)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    for init in proto.graph.initializer:
        shapes[init.name] = list(init.dims)
    layers = []
    for i, node in enumerate(proto.graph.node):
        if node.op_type not in MAC_OPS:
            continue
        macs = _node_macs(node, shapes)
        params = sum(init_sizes.get(name, 0) for name in node.input)
        layers.append(LayerCost(node.name or f"{node.op_type}_{i}", node.op_type, macs, params))
    return layers


def _infer_shapes(proto: Any) -> Any:
    """ONNX Runtime's symbolic shape inference (it resolves the reshapes of attention blocks
    that onnx's own inference leaves unknown), falling back to onnx's."""
    import onnx

    from slimkit.io import scratch_cwd

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        with scratch_cwd():  # on failure it saves a model-sized debug file into the cwd
            return SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    except Exception:  # not every graph is supported there; onnx's inference still helps
        return onnx.shape_inference.infer_shapes(proto, data_prop=True)


def _node_macs(node: Any, shapes: dict[str, list[int]]) -> int:
    out = shapes.get(node.output[0], [])
    if not out or any(d <= 0 for d in out):
        return 0
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose"):
        w = shapes.get(node.input[3 if node.op_type == "QLinearConv" else 1], [])
        if len(w) < 3:
            return 0
        # every output element takes (in_channels / groups) * kernel elements
        return int(np.prod(out, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
    a = shapes.get(node.input[0], [])
    if not a:
        return 0
    k = a[0] if node.op_type == "Gemm" and _attr(node, "transA") else a[-1]
    return int(np.prod(out, dtype=np.int64) * k)


def _attr(node: Any, name: str) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), 0)


def peak_forward_memory_mb(model: Model, sample: dict[str, np.ndarray]) -> float:
    """The memory ``model`` takes to run ``sample`` here (MB): see :func:`run_memory_mb`."""
    from slimkit.runtime import open_session

    runtime = "torch" if model.module is not None else "onnxruntime"

    def work() -> None:
        with open_session(model, runtime) as session:
            for _ in range(3):
                session.run(sample)

    return measure_peak_rss_mb(work) + resident_weights_mb(model)


def resident_weights_mb(model: Model) -> float:
    """MB of a torch module's parameters and buffers: resident before any session opens, so
    an RSS rise does not see them (ONNX Runtime copies the weights into its session, and the
    rise counts them there)."""
    if model.module is None:
        return 0.0
    tensors = [*model.module.parameters(), *model.module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc's ``malloc_trim``; elsewhere nothing), so
    an RSS rise measured next counts memory newly taken, not memory an earlier run freed and
    the allocator reuses (without it a session's rise read 0 MB)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        trim = None
    if trim is not None:
        trim(0)


def measure_peak_rss_mb(fn: Callable[[], Any], interval_s: float = 0.001) -> float:
    """Run ``fn`` while a thread samples this process's RSS; return the peak increase in MB."""
    return run_measuring_rss(fn, interval_s)[1]


def run_measuring_rss(fn: Callable[[], T], interval_s: float = 0.001) -> tuple[T, float]:
    """``(fn(), peak RSS increase in MB while it ran)``, sampled by a thread, from a trimmed
    heap (:func:`trim_heap`). Within about 15% of a fresh process's RSS rise (ResNet-18 in
    ONNX Runtime: 155-190 MB here vs 153-160 MB fresh)."""
    import psutil

    trim_heap()
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    peak = max(peak, proc.memory_info().rss)
    return result, (peak - base) / 2**20


def size_comparison(before: Model, after: Model) -> dict[str, Any]:
    """Parameters, MACs (batch 1) and safetensors size, before and after."""
    # in eval mode: a forward in training mode would update BatchNorm statistics
    with eval_mode(before.require_module("statistics")), \
            eval_mode(after.require_module("statistics")):
        a, b = model_stats(before), model_stats(after)
    return {"parameters_before": a.parameters, "parameters_after": b.parameters,
            "parameters_ratio": round(b.parameters / max(a.parameters, 1), 4),
            "macs_before": a.macs, "macs_after": b.macs,
            "macs_ratio": round(b.macs / max(a.macs, 1), 4),
            "bytes_before": a.size_bytes, "bytes_after": b.size_bytes}
