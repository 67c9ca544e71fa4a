"""Width pruning of a decoder LM: attention heads and FFN neurons, by activation importance,
keeping grouped-query attention consistent and the model an ordinary Hugging Face model.

Built on the shared structure: ``slimkit.graph.transformer`` finds each layer's attention
(:class:`HeadSite`, with its key/value groups) and gated FFN (:class:`FFNSite`), the
``activation`` importance of ``slimkit.prune`` scores what each head and neuron writes into the
residual stream (``w**2 * E[x**2]`` summed over its columns of ``o_proj`` / ``down_proj``), and
the decisions become a :class:`PrunePlan` of ``LayerEdit`` rows replayed by ``apply_plan``.

What differs from ``slimkit.prune``'s transformer planner, and why it is here:
- every layer keeps the *same* counts (a Hugging Face config holds one head count and one FFN
  width, and ONNX Runtime GenAI's builder reads them), so the ratio is applied per layer;
- grouped-query attention offers two units: whole key/value groups with their query heads, or
  query heads evenly in every group (``HeadUnit``); the second keeps the KV cache and needs the
  attention's ``num_key_value_groups`` set;
- the config is set to the new shape (``num_attention_heads``, ``num_key_value_heads``, an
  explicit ``head_dim``, ``intermediate_size``), so the model saves, loads and exports.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.graph.plan import GroupDecision, LayerEdit, PrunePlan, apply_plan
from slimkit.graph.transformer import FFNSite, HeadSite, find_sites
from slimkit.llm.load import hf_module
from slimkit.llm.prune.calibration import Calibration
from slimkit.llm.prune.config import HeadUnit, LLMPruneConfig
from slimkit.model import Model
from slimkit.prune.decide import kept_count, top_indices
from slimkit.prune.importance import IMPORTANCE, ImportanceContext


def keep_count(units: int, ratio: float, multiple: int, what: str) -> int:
    """How many of ``units`` stay; a ratio that would leave none is refused, naming ``what``.

    Example:
        >>> keep_count(1536, 0.25, 32, "x"), keep_count(3, 0.25, 1, "x")
        (1152, 2)
    """
    target = units * (1.0 - ratio)
    if round(target) < 1:
        raise InputError(f"ratio {ratio} would leave {what} empty ({units} -> {target:.2f}); "
                         "use a smaller ratio")
    return kept_count(units, target, multiple)[0]


def calibration_data(calibration: Calibration) -> Dataset:
    """The calibration windows as a Dataset of the causal LM's inputs."""
    ids = calibration.ids.numpy()
    return Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids)}, name="calibration")


def _sites(module: torch.nn.Module, layers: int) -> tuple[list[HeadSite], list[FFNSite]]:
    sites = find_sites(module)
    heads = [s for s in sites if isinstance(s, HeadSite)]
    ffns = [s for s in sites if isinstance(s, FFNSite)]
    if len(heads) != layers or len(ffns) != layers:
        raise InputError(f"width pruning found {len(heads)} attentions and {len(ffns)} FFNs "
                         f"in {layers} decoder layers: it needs separate q/k/v/o and "
                         "gate/up/down projections in every layer (Llama, Qwen2, Mistral)")
    shapes = {(s.heads, s.kv_heads, s.head_dim) for s in heads} | {(f.neurons,) for f in ffns}
    if len(shapes) != 2:
        raise InputError("width pruning needs every decoder layer to have the same head counts "
                         "and FFN width (one Hugging Face config describes them all)")
    return heads, ffns


def _head_keep(site: HeadSite, saliency: torch.Tensor, ratio: float,
               unit: HeadUnit) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(query heads kept, key/value heads kept)`` of one attention."""
    per_head = saliency.double().reshape(saliency.shape[0], site.heads, -1).sum((0, 2))
    if unit == HeadUnit.GROUP:
        groups = per_head.reshape(site.kv_heads, site.group).sum(1)
        keep = keep_count(site.kv_heads, ratio, 1, f"'{site.holder}' (key/value groups)")
        kv = top_indices(groups, keep)
        return tuple(g * site.group + j for g in kv for j in range(site.group)), kv
    keep = keep_count(site.group, ratio, 1, f"'{site.holder}' (query heads per group)")
    q = tuple(g * site.group + j for g in range(site.kv_heads)
              for j in top_indices(per_head[g * site.group:(g + 1) * site.group], keep))
    return q, tuple(range(site.kv_heads))


def _rows(heads: tuple[int, ...], size: int) -> tuple[int, ...]:
    return tuple(h * size + j for h in heads for j in range(size))


def _linear(module: torch.nn.Module, name: str, out_keep: tuple[int, ...] | None = None,
            in_keep: tuple[int, ...] | None = None) -> LayerEdit:
    layer = cast(torch.nn.Linear, module.get_submodule(name))  # a finder checked the type
    return LayerEdit(name, "Linear", layer.out_features, layer.in_features, out_keep, in_keep)


def _head_edits(module: torch.nn.Module, site: HeadSite, q: tuple[int, ...],
                kv: tuple[int, ...]) -> list[LayerEdit]:
    if len(q) == site.heads:
        return []
    rows_q = _rows(q, site.head_dim)
    edits = [_linear(module, site.q, out_keep=rows_q), _linear(module, site.o, in_keep=rows_q)]
    if len(kv) < site.kv_heads:
        rows_kv = _rows(kv, site.head_dim)
        edits += [_linear(module, site.k, out_keep=rows_kv),
                  _linear(module, site.v, out_keep=rows_kv)]
    return edits


def prune_width(model: Model, config: LLMPruneConfig,
                calibration: Calibration) -> tuple[PrunePlan, dict[str, Any]]:
    """Remove heads and FFN neurons of ``model`` in place; the plan and a summary."""
    module = model.require_module("width pruning")
    hf = hf_module(model)
    heads, ffns = _sites(module, int(hf.config.num_hidden_layers))
    head_ratio = config.sparsity if config.head_ratio is None else config.head_ratio
    ffn_ratio = config.sparsity if config.ffn_ratio is None else config.ffn_ratio
    params = tuple(f"{s.o}.weight" for s in heads) + tuple(f"{s.down}.weight" for s in ffns)
    data = calibration_data(calibration)
    saliency = IMPORTANCE.get("activation")(ImportanceContext(
        model, params, data, config.seed, batches=len(data), batch_size=2))
    edits: list[LayerEdit] = []
    groups: list[GroupDecision] = []
    kept_q = kept_kv = kept_ffn = 0
    for number, (head, ffn) in enumerate(zip(heads, ffns, strict=True)):
        q, kv = _head_keep(head, saliency[f"{head.o}.weight"], head_ratio, config.head_unit)
        edits += _head_edits(module, head, q, kv)
        groups.append(GroupDecision(2 * number, head.layers, head.heads, len(q), None,
                                    f"query heads ({config.head_unit.value} unit)"))
        neurons = _cols(saliency[f"{ffn.down}.weight"])
        keep = top_indices(neurons, keep_count(ffn.neurons, ffn_ratio, config.round_to,
                                               f"'{ffn.down}' (FFN neurons)"))
        if len(keep) < ffn.neurons:
            edits += [*(_linear(module, n, out_keep=keep) for n in ffn.up),
                      _linear(module, ffn.down, in_keep=keep)]
        groups.append(GroupDecision(2 * number + 1, ffn.layers, ffn.neurons, len(keep), None,
                                    "FFN neurons"))
        kept_q, kept_kv, kept_ffn = len(q), len(kv), len(keep)
    plan = PrunePlan("structured", {"name": model.name, "source": model.source},
                     config.to_dict(), tuple(edits), tuple(groups),
                     extra={"importance": "activation"})
    apply_plan(module, plan)
    shape = set_width(hf, kept_q, kept_kv, heads[0].head_dim, kept_ffn)
    before = {"num_attention_heads": heads[0].heads, "num_key_value_heads": heads[0].kv_heads,
              "intermediate_size": ffns[0].neurons}
    return plan, {"before": before, "after": shape, "head_ratio": head_ratio,
                  "ffn_ratio": ffn_ratio, "head_unit": config.head_unit.value}


def _cols(saliency: torch.Tensor) -> torch.Tensor:
    return saliency.double().sum(0)


def set_width(hf: Any, heads: int, kv_heads: int, head_dim: int,
              intermediate: int) -> dict[str, int]:
    """Set the config (and each attention's group size) to the pruned shape."""
    config = hf.config
    config.num_attention_heads, config.num_key_value_heads = heads, kv_heads
    config.head_dim, config.intermediate_size = head_dim, intermediate
    for module in hf.modules():
        if "num_key_value_groups" in module.__dict__:
            module.num_key_value_groups = heads // kv_heads
    return {"num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "head_dim": head_dim, "intermediate_size": intermediate}
