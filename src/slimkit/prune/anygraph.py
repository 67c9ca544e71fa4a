"""Structured pruning of any model through its axis graph (``slimkit.graph.axes``): the model
is traced once with ``torch.export``; every group of coupled positions it finds (attention
heads, FFN neurons, convolution channels, recurrent hidden units, the hidden size) is scored
with the importance criterion, pruned at its ratio (``head_ratio``, ``hidden_ratio``,
``ffn_ratio``, else ``ratio``) and written down as a plan of per-tensor edits.

No model-specific code: what cannot be pruned safely is left whole with its reason, either
because the graph says so (an op without a rule, a position fixed by an input or an output) or
because the pruned model does not run: every plan is applied to a copy and run before it is
returned; a group whose removal breaks the forward (a module that uses a fixed size) is named
and left whole, the rest stays pruned.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimkit.data import Dataset, synthetic
from slimkit.errors import InputError
from slimkit.graph.axes import AxisGroup
from slimkit.graph.axes_edits import AxisIndex, attribute_edits, emptied, param_edits
from slimkit.graph.axes_trace import AxisTrace, trace_axes
from slimkit.graph.plan import GroupDecision, PrunePlan
from slimkit.graph.slicing import AttrEdit, ParamEdit, apply_attr_edits, apply_param_edits
from slimkit.load.probe import layer_text, named_failure
from slimkit.model import Model, eval_mode
from slimkit.prune.config import PruneConfig, Scope
from slimkit.prune.decide import Decision, decide_global, decide_per_group
from slimkit.prune.importance import IMPORTANCE, ImportanceContext
from slimkit.selector import Layer, Selector

log = logging.getLogger(__name__)
KINDS = {"heads": "attention heads", "hidden": "hidden size", "channels": "channels"}


@dataclass
class _Work:
    """What the planner carries between steps."""

    model: Model
    trace: AxisTrace
    index: AxisIndex
    groups: list[AxisGroup]
    scores: dict[int, float]


def plan_any(model: Model, config: PruneConfig, data: Dataset | None = None) -> PrunePlan:
    """Plan structured pruning of any traceable model (see the module docstring).

    Example:
        >>> from slimkit.testing.graphs import graph_model
        >>> plan = plan_any(graph_model("lstm"), PruneConfig(ratio=0.5, round_to=4))
        >>> [(g.channels, g.kept) for g in plan.groups if g.kept < g.channels]
        [(16, 8), (32, 16)]
    """
    module = model.require_module("structured pruning")
    trace = trace_axes(model)
    groups = trace.graph.groups()
    excluded = _excluded(groups, module, config.exclude)
    prunable = [g for g in groups if g.prunable and g.id not in excluded]
    index = AxisIndex.build(trace.graph, {leaf for g in prunable for leaf in g.leaves})
    work = _Work(model, trace, index, prunable, _scores(model, trace, index, config, data))
    decisions = _decide(work, config)
    removed = {leaf for g in prunable for i, leaf in enumerate(g.leaves)
               if i not in set(decisions[g.id].keep)}
    removed, broken = _verified(work, _rescued(work, removed))
    params, attributes = _edits(work, removed)
    notes = {g.id: "left whole: " + "; ".join(g.pinned[:2]) for g in groups if g.pinned}
    notes.update({g: "left whole: excluded by a rule" for g in excluded})
    notes.update({g: f"left whole: {why}" for g, why in broken.items()})
    return PrunePlan(
        mode="structured",
        model={"name": model.name, "source": model.source,
               "inputs": [spec.to_dict() for spec in model.inputs]},
        config=config.to_dict(),
        groups=tuple(_decision(g, decisions.get(g.id), removed, notes.get(g.id))
                     for g in groups),
        skipped=tuple(trace.graph.skipped),
        extra={"planner": "axis graph (torch.export)", "meta": _meta(groups, removed),
               "importance_loss": None},
        params=params, attributes=attributes,
    )


def hidden_size_is_free(model: Model) -> bool:
    """Whether the model's hidden size (a transformer's residual stream) can shrink: no model
    output carries it (a head maps it to logits). An encoder returning its hidden states or
    a pooled embedding keeps it."""
    try:
        groups = trace_axes(model).graph.groups()
    except InputError:
        return False
    return any(g.kind == "hidden" and g.prunable for g in groups)


def _excluded(groups: list[AxisGroup], module: nn.Module, rules: tuple[str, ...]) -> set[int]:
    if not rules:
        return set()
    layers = [Layer(n, type(m).__name__, n) for n, m in module.named_modules() if n]
    chosen = {x.name for rule in rules for x in Selector((rule,)).select(layers)}
    return {g.id for g in groups
            if any(p in chosen or any(p.startswith(c + ".") for c in chosen)
                   for p in g.producers)}


def _scores(model: Model, trace: AxisTrace, index: AxisIndex, config: PruneConfig,
            data: Dataset | None) -> dict[int, float]:
    """Every leaf's importance: the criterion's saliency summed over the slices of every
    parameter position it owns (summed or averaged over those positions' tensors)."""
    named = dict(model.require_module("scoring").named_parameters())
    scored = tuple(sorted({name for name, _ in index.positions if name in named}))
    context = ImportanceContext(model, scored, data, config.seed, config.taylor_batches,
                                config.batch_size)
    saliency = IMPORTANCE.get(config.importance)(context)
    total: dict[int, float] = {}
    count: dict[int, int] = {}
    for (name, axis), rows in index.positions.items():
        values = saliency.get(name)
        if values is None:
            continue
        per = values.double().transpose(0, axis).reshape(values.shape[axis], -1).sum(1)
        for value, leaves in zip(per.tolist(), rows, strict=True):
            for leaf in leaves:
                total[leaf] = total.get(leaf, 0.0) + value
                count[leaf] = count.get(leaf, 0) + 1
    if config.group_reduce.value == "mean":
        return {leaf: score / count[leaf] for leaf, score in total.items()}
    return total


def _ratio(group: AxisGroup, config: PruneConfig, heads: bool) -> float:
    own = {"heads": config.head_ratio, "hidden": config.hidden_share,
           "channels": config.ffn_ratio if heads else None}[group.kind]
    return config.ratio if own is None else own


def _decide(work: _Work, config: PruneConfig) -> dict[int, Decision]:
    heads = any(g.kind == "heads" for g in work.groups)
    rules = _layer_ratios(work, config)

    def tensor(group: AxisGroup) -> torch.Tensor:
        return torch.tensor([work.scores.get(leaf, 0.0) for leaf in group.leaves],
                            dtype=torch.float64)

    def multiple(group: AxisGroup) -> int:
        return 1 if group.kind == "heads" else config.round_to

    decisions: dict[int, Decision] = {}
    if config.scope == Scope.GLOBAL:
        for kind in KINDS:
            mine = [g for g in work.groups if g.kind == kind]
            if mine:
                found = decide_global([tensor(g) for g in mine], _ratio(mine[0], config, heads),
                                      multiple(mine[0]))
                decisions.update({g.id: d for g, d in zip(mine, found, strict=True)})
        return decisions
    for group in work.groups:
        ratio = next((r for names, r in rules if names & set(group.producers)),
                     _ratio(group, config, heads))
        decisions[group.id] = decide_per_group(tensor(group), ratio, multiple(group))
    return decisions


def _layer_ratios(work: _Work, config: PruneConfig) -> list[tuple[set[str], float]]:
    if not config.layer_ratios:
        return []
    module = work.model.require_module("pruning")
    layers = [Layer(n, type(m).__name__, n) for n, m in module.named_modules() if n]
    return [({x.name for x in Selector((rule,)).select(layers)}, ratio)
            for rule, ratio in config.layer_ratios]


def _rescued(work: _Work, removed: set[int]) -> set[int]:
    """Keep the best position of any parameter axis that would lose all of them."""
    removed = set(removed)
    for _ in range(len(work.index.positions) + 1):
        empty = emptied(work.index, removed)
        if not empty:
            break
        for key in empty:
            candidates = {leaf for row in work.index.positions[key] for leaf in row} & removed
            if candidates:
                removed.discard(max(candidates, key=lambda x: (work.scores.get(x, 0.0), -x)))
    return removed


def _edits(work: _Work, removed: set[int]) -> tuple[tuple[ParamEdit, ...], tuple[AttrEdit, ...]]:
    root = work.model.require_module("pruning")
    return (param_edits(work.trace, work.index, removed),
            attribute_edits(work.trace, root, removed))


def _verified(work: _Work, removed: set[int]) -> tuple[set[int], dict[int, str]]:
    """``removed`` less the groups whose removal breaks the forward, and why each broke."""
    if not removed or _failure(work, removed) is None:
        return removed, {}
    broken: dict[int, str] = {}
    for group in work.groups:
        mine = removed & set(group.leaves)
        if mine:
            why = _failure(work, _rescued(work, mine))
            if why is not None:
                broken[group.id] = why
    bad = {leaf for g in work.groups if g.id in broken for leaf in g.leaves}
    removed = _rescued(work, removed - bad)
    if removed and _failure(work, removed) is not None:  # groups that break only together
        kept: set[int] = set()
        for group in work.groups:
            mine = removed & set(group.leaves)
            if mine and group.id not in broken:
                trial = _rescued(work, kept | mine)
                why = _failure(work, trial)
                if why is None:
                    kept = trial
                else:
                    broken[group.id] = why + " (together with the groups before it)"
        removed = kept
    for group_id, why in broken.items():
        log.info("group %d left whole: %s", group_id, why)
    return removed, broken


def _failure(work: _Work, removed: set[int]) -> str | None:
    """None when the model pruned by ``removed`` runs and keeps its output shapes, else
    which layer failed."""
    params, attributes = _edits(work, removed)

    def edit(module: nn.Module) -> None:
        apply_param_edits(module, params)
        apply_attr_edits(module, attributes)

    return run_failure(work.model, edit)


def plan_failure(model: Model, plan: PrunePlan) -> str | None:
    """None when ``plan`` applied to a copy of ``model`` runs and keeps its output shapes,
    else why not (one line naming the failing layer)."""
    from slimkit.graph.plan import apply_plan

    return run_failure(model, lambda module: apply_plan(module, plan))


def run_failure(model: Model, edit: Callable[[nn.Module], Any]) -> str | None:
    """Apply ``edit`` to a copy of ``model`` and run it on a synthetic batch of 2."""
    module = model.require_module("pruning")
    trial = copy.deepcopy(module)
    args = model.torch_args(synthetic(model.inputs, 2, seed=0, dynamic=16).first_batch(2))
    with eval_mode(module), torch.no_grad():
        want = _shapes(module(*args))
    try:
        with torch.no_grad():
            edit(trial)
    except Exception as exc:  # noqa: BLE001 - the plan itself does not apply
        return f"its edits do not apply ({type(exc).__name__})"
    with eval_mode(trial), torch.no_grad(), named_failure(trial) as tracker:
        try:
            got = _shapes(trial(*args))
        except Exception as exc:  # noqa: BLE001 - any layer may fail: name it
            return (f"the pruned model fails in {layer_text(tracker.innermost)} "
                    f"({type(exc).__name__}): a size there is fixed")
    if got != want:
        return f"the pruned model's outputs change shape ({want} -> {got})"
    return None


def _shapes(output: Any) -> list[tuple[int, ...]]:
    items = output if isinstance(output, (tuple, list)) else (output,)
    return [tuple(t.shape) for t in items if isinstance(t, torch.Tensor)]


def _decision(group: AxisGroup, decision: Decision | None, removed: set[int],
              note: str | None) -> GroupDecision:
    kept = sum(1 for leaf in group.leaves if leaf not in removed)
    what = KINDS[group.kind]
    text = "; ".join(x for x in (what, note or (decision.note if decision else None)) if x)
    return GroupDecision(group.id, tuple(group.producers), len(group.leaves), kept,
                         round(decision.target, 3) if decision and not note else None, text)


def _meta(groups: list[AxisGroup], removed: set[int]) -> dict[str, Any]:
    """Model facts the pruning made stale (ONNX Runtime's attention fusion reads them)."""
    changed = {g.kind for g in groups if removed & set(g.leaves)}
    meta: dict[str, Any] = {}
    if "heads" in changed or "hidden" in changed:
        meta["num_attention_heads"] = None
    if "hidden" in changed:
        meta["hidden_size"] = None
    return meta
