"""Transformer structure for structured pruning: attention heads and FFN neurons.

Hugging Face models do not trace with ``torch.fx`` and every transformer keeps its features on
the last axis, so transformer blocks are recognised at module level, by structure (never by
autograd node names) by the finders of ``attention_sites.py``.

- **Attention heads** (:class:`HeadSite`): the rows of the query, key and value projections and
  the columns of the output projection that belong to one head are removed together; the head
  size stays. With grouped-query attention (fewer key/value heads than query heads) the unit is
  a whole key/value group with its query heads, so every group keeps the same size.
- **FFN neurons** (:class:`FFNSite`): the rows of the up projection(s) (``fc1``; gate and up of
  a gated MLP) and the columns of the down projection.

A finder trusts the structure it sees (``fc1`` feeds ``fc2`` through element-wise ops only;
``_check_outputs`` of ``prune`` catches a model that breaks this). Units are scored on the
layer writing them back (:func:`site_scores`). The residual stream (hidden size, embeddings,
norms) is coupled through every block and left whole. The plan is ordinary ``LayerEdit`` rows:
Linear layers, plus the module holding the head counts (``num_heads``, ``all_head_size``...),
rebuilt by :func:`surgery_for`; ``compensate`` adds bias shifts (``compensate.py``).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from slimkit.data import Dataset
from slimkit.graph.layers import Keep
from slimkit.graph.plan import GroupDecision, LayerEdit, PrunePlan
from slimkit.graph.transformer import (  # noqa: F401  (re-exported)
    DIM_ATTRS,
    FINDERS,
    HEAD_ATTRS,
    KV_ATTRS,
    FFNSite,
    HeadSite,
    Site,
    find_sites,
    head_axes,
    int_attr,
)
from slimkit.model import Model
from slimkit.prune import activation as _activation  # noqa: F401  (registers it)
from slimkit.prune.compensate import compensation, removed_columns
from slimkit.prune.config import PruneConfig, Scope
from slimkit.prune.decide import Decision, decide_global, decide_per_group
from slimkit.prune.importance import IMPORTANCE, ImportanceContext
from slimkit.selector import Layer, Selector

RESIDUAL_NOTE = ("the residual stream (hidden size: embeddings, norms, attention outputs) is "
                 "coupled through every block and left whole; in a model with transformer "
                 "blocks only their heads and FFN neurons are pruned")



# ---- importance and decisions -----------------------------------------------------------

def _cols(saliency: torch.Tensor, units: int) -> torch.Tensor:
    return saliency.reshape(saliency.shape[0], units, -1).sum((0, 2))


def site_scores(site: Site, saliency: dict[str, torch.Tensor], reduce: str) -> torch.Tensor:
    """One score per removable unit (a key/value group of heads, or an FFN neuron), read on
    the layer that writes it back into the residual stream: the output projection's columns
    of its heads, the down projection's column of the neuron. That is all the rest of the
    network sees of a unit; adding the query/key/value or up rows made the MiniLM embeddings
    worse for l2, taylor and activation (bench_prune_minilm.py). ``reduce`` is accepted for
    the interface: one layer per unit leaves nothing to combine.

    Example:
        >>> s = FFNSite(("up",), "down", 2)
        >>> site_scores(s, {"down.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]])},
        ...             "sum").tolist()
        [4.0, 6.0]
    """
    if isinstance(site, FFNSite):
        return _cols(saliency[f"{site.down}.weight"].double(), site.neurons)
    return _cols(saliency[f"{site.o}.weight"].double(), site.kv_heads)


def _ratio(site: Site, config: PruneConfig, chosen: list[tuple[set[str], float]]) -> float:
    for names, ratio in chosen:
        if names & set(site.layers) or (isinstance(site, HeadSite) and site.holder in names):
            return ratio
    own = config.head_ratio if isinstance(site, HeadSite) else config.ffn_ratio
    return config.ratio if own is None else own


def _decide(sites: list[Site], scores: list[torch.Tensor], config: PruneConfig,
            module: nn.Module) -> list[Decision]:
    layers = [Layer(n, type(m).__name__, n) for n, m in module.named_modules() if n]
    chosen = [({x.name for x in Selector((rule,)).select(layers)}, ratio)
              for rule, ratio in config.layer_ratios]
    decisions: dict[int, Decision] = {}
    for kind, multiple in ((HeadSite, 1), (FFNSite, config.round_to)):
        mine = [i for i, s in enumerate(sites) if isinstance(s, kind)]
        if config.scope == Scope.GLOBAL and mine:
            ratio = _ratio(sites[mine[0]], config, [])
            found = decide_global([scores[i] for i in mine], ratio, multiple)
            decisions.update(zip(mine, found, strict=True))
        for i in mine if config.scope != Scope.GLOBAL else []:
            decisions[i] = decide_per_group(scores[i], _ratio(sites[i], config, chosen),
                                            multiple)
    return [decisions[i] for i in range(len(sites))]


def _excluded(sites: list[Site], module: nn.Module, exclude: tuple[str, ...]) -> set[int]:
    layers = [Layer(n, type(m).__name__, n) for n, m in module.named_modules() if n]
    names = {x.name for rule in exclude for x in Selector((rule,)).select(layers)}
    return {i for i, s in enumerate(sites)
            if any(x in names or any(x.startswith(n + ".") for n in names)
                   for x in (*s.layers, *((s.holder,) if isinstance(s, HeadSite) else ())))}


# ---- the plan ---------------------------------------------------------------------------

def _expand(keep: tuple[int, ...], block: int) -> tuple[int, ...]:
    return tuple(u * block + j for u in keep for j in range(block))


def _edits(site: Site, keep: tuple[int, ...], module: nn.Module) -> list[LayerEdit]:
    def linear(name: str, out_keep: Keep = None, in_keep: Keep = None) -> LayerEdit:
        layer = cast(nn.Linear, module.get_submodule(name))  # a finder checked the type
        return LayerEdit(name, "Linear", layer.out_features, layer.in_features,
                         tuple(out_keep) if out_keep is not None else None,
                         tuple(in_keep) if in_keep is not None else None)

    if isinstance(site, FFNSite):
        return [*(linear(n, out_keep=keep) for n in site.up), linear(site.down, in_keep=keep)]
    q_heads = _expand(keep, site.group)
    rows_q = _expand(q_heads, site.head_dim)
    rows_kv = _expand(keep, site.head_dim)
    edits = [linear(site.q, out_keep=rows_q), linear(site.k, out_keep=rows_kv),
             linear(site.v, out_keep=rows_kv), linear(site.o, in_keep=rows_q)]
    holder = module.get_submodule(site.holder) if site.holder else module
    heads, kv = head_axes(holder)
    if heads:
        edits.append(LayerEdit(site.holder, type(holder).__name__, heads, kv, q_heads,
                               tuple(keep) if kv is not None else None))
    return edits


def has_transformer_blocks(module: nn.Module) -> bool:
    """Whether ``module`` holds attention or FFN blocks that :func:`plan_transformer`
    prunes."""
    return any(isinstance(s, HeadSite) for s in find_sites(module))


def plan_transformer(model: Model, config: PruneConfig, data: Dataset | None) -> PrunePlan:
    """Plan the removal of attention heads (``head_ratio``) and FFN neurons (``ffn_ratio``);
    both default to ``ratio``. ``round_to`` rounds FFN widths; heads are not rounded.

    Example:
        >>> from slimkit.testing import tiny_transformer
        >>> plan = plan_transformer(tiny_transformer("vit"), PruneConfig(ratio=0.5,
        ...                         round_to=1), None)
        >>> [(g.channels, g.kept) for g in plan.groups][:2]
        [(4, 2), (64, 32)]
    """
    module = model.require_module("structured pruning")
    sites = find_sites(module)
    excluded = _excluded(sites, module, config.exclude)
    params = tuple(f"{s.down if isinstance(s, FFNSite) else s.o}.weight" for s in sites)
    context = ImportanceContext(model, params, data, config.seed, config.taylor_batches,
                                config.batch_size)
    saliency = IMPORTANCE.get(config.importance)(context)
    active = [s for i, s in enumerate(sites) if i not in excluded]
    scores = [site_scores(s, saliency, config.group_reduce.value) for s in active]
    decisions = dict(zip(active, _decide(active, scores, config, module), strict=True))
    edits: list[LayerEdit] = []
    groups: list[GroupDecision] = []
    for number, site in enumerate(sites):
        units = site.kv_heads if isinstance(site, HeadSite) else site.neurons
        what = _describe(site)
        decision = decisions.get(site)
        if decision is None:
            groups.append(GroupDecision(number, site.layers, units, units, None,
                                        f"left whole: {what} excluded by a rule"))
            continue
        if len(decision.keep) < units:
            edits += _edits(site, decision.keep, module)
        note = "; ".join(x for x in (what, decision.note) if x)
        groups.append(GroupDecision(number, site.layers, units, len(decision.keep),
                                    round(decision.target, 3), note))
    extra = {"importance_loss": _loss_note(config, model, data),
             "transformer": _summary(sites, decisions)}
    if config.compensate:  # FLAP's bias compensation, replayed by apply_plan
        removed = removed_columns(edits, (s.o if isinstance(s, HeadSite) else s.down
                                          for s in sites))
        extra["bias_shift"] = compensation(model, removed, data, config.taylor_batches,
                                           config.batch_size)
    return PrunePlan(
        mode="structured",
        model={"name": model.name, "source": model.source,
               "inputs": [spec.to_dict() for spec in model.inputs]},
        config=config.to_dict(), layers=tuple(edits), groups=tuple(groups),
        skipped=({"layer": "hidden size", "type": "residual stream", "why": RESIDUAL_NOTE},),
        extra=extra,
    )


def _describe(site: Site) -> str:
    if isinstance(site, FFNSite):
        return "FFN neurons"
    if site.group > 1:
        return f"attention heads in key/value groups of {site.group} query heads"
    return "attention heads"


def _summary(sites: list[Site], decisions: dict[Site, Decision]) -> dict[str, Any]:
    """Per block: heads (query, key/value) and FFN width kept, for the report and configs."""
    heads, ffn = [], []
    for site in sites:
        decision = decisions.get(site)
        if isinstance(site, HeadSite):
            kept = len(decision.keep) if decision else site.kv_heads
            heads.append({"attention": site.holder, "heads": site.heads,
                          "kept_heads": kept * site.group, "kv_heads": site.kv_heads,
                          "kept_kv_heads": kept, "head_dim": site.head_dim})
        else:
            ffn.append({"layer": site.down, "neurons": site.neurons,
                        "kept": len(decision.keep) if decision else site.neurons})
    return {"heads": heads, "ffn": ffn}


def pruned_meta(meta: dict[str, Any], plan: PrunePlan) -> dict[str, Any]:
    """``meta`` with the head count of the pruned model: the kept count when every layer keeps
    the same, else None (ONNX Runtime's attention fusion reads it; it needs one count).

    Example:
        >>> plan = PrunePlan("structured", {}, {}, extra={"transformer": {"heads": [
        ...     {"kept_heads": 8}, {"kept_heads": 8}], "ffn": []}})
        >>> pruned_meta({"num_attention_heads": 12}, plan)["num_attention_heads"]
        8
    """
    meta = {**meta, **plan.extra.get("meta", {})}
    heads = {h["kept_heads"] for h in plan.extra.get("transformer", {}).get("heads", [])}
    if not heads:
        return meta
    return {**meta, "num_attention_heads": heads.pop() if len(heads) == 1 else None}


def _loss_note(config: PruneConfig, model: Model, data: Dataset | None) -> str | None:
    if config.importance != "taylor":
        return None
    from slimkit.prune.importance import taylor_loss_name

    return taylor_loss_name(data, model.task)
