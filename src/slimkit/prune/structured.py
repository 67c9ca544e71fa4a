"""Structured channel pruning, planned: trace the dependency graph, score every coupled channel,
decide per group (or globally) which channels stay, and write it all down as a ``PrunePlan``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from slimkit.data import Dataset
from slimkit.errors import InputError
from slimkit.graph.channels import ChannelGraph, ChannelGroup
from slimkit.graph.plan import GroupDecision, LayerEdit, PrunePlan
from slimkit.graph.trace import build_graph
from slimkit.model import Model
from slimkit.prune.attention import has_transformer_blocks, plan_transformer, pruned_meta
from slimkit.prune.config import PruneConfig, PruneMode, Scope
from slimkit.prune.decide import Decision, decide_global, decide_per_group
from slimkit.prune.importance import (
    IMPORTANCE,
    ImportanceContext,
    channel_scores,
    group_scores,
    scored_parameters,
)
from slimkit.selector import Layer, Selector

log = logging.getLogger(__name__)


def plan_pruning(model: Model, config: PruneConfig | None = None,
                 data: Dataset | None = None) -> PrunePlan:
    """Decide which channels of ``model`` to remove; the model is only read.

    Args:
        model: a torch model that ``torch.fx`` can trace.
        config: ratio, scope, importance, rounding, exclusions (structured mode).
        data: examples for data-driven importance (taylor).

    Example:
        >>> from slimkit import load_model
        >>> plan = plan_pruning(load_model("builtin:resnet18-cifar"), PruneConfig(ratio=0.5))
        >>> [(g.channels, g.kept) for g in plan.groups][:3]
        [(64, 32), (64, 32), (64, 32)]
    """
    config = config or PruneConfig()
    if config.mode != PruneMode.STRUCTURED:
        raise InputError("plan_pruning plans structured pruning; for unstructured masks call "
                         "prune() with mode 'unstructured'")
    module = model.require_module("structured pruning")
    from slimkit.prune.anygraph import hidden_size_is_free, plan_any, plan_failure

    blocks = has_transformer_blocks(module)
    if blocks and config.hidden_share > 0 and not config.compensate \
            and hidden_size_is_free(model):  # heads, FFN neurons and the hidden size
        return plan_any(model, config, data)
    if blocks and (config.hidden_share == 0 or config.hidden_ratio is None):
        # heads and FFN neurons; the hidden size is kept
        plan = plan_transformer(model, config, data)
        why = plan_failure(model, plan)
        if why is None:
            return plan
        log.info("transformer blocks of '%s' recognised, but %s: tracing its graph instead",
                 model.name, why)
    graph = _channel_graph(model, config)
    if graph is None:  # any other graph: traced with torch.export (anygraph.py)
        return plan_any(model, config, data)
    plan = _plan_channels(model, config, data, graph)
    why = plan_failure(model, plan)
    if why is None:
        return plan
    log.info("the channel plan of '%s' does not run (%s): tracing its graph instead",
             model.name, why)
    return plan_any(model, config, data)  # leaves the groups that break the forward whole


def _plan_channels(model: Model, config: PruneConfig, data: Dataset | None,
                   graph: ChannelGraph) -> PrunePlan:
    """The plan of the torch.fx channel graph (every op understood)."""
    module = model.require_module("structured pruning")
    groups = graph.groups()
    prunable = [g for g in groups if g.prunable]
    context = ImportanceContext(model, scored_parameters(graph, module), data, config.seed,
                                config.taylor_batches, config.batch_size)
    scores = channel_scores(graph, IMPORTANCE.get(config.importance)(context),
                            config.group_reduce.value)
    decisions = {group.id: _no_layer_emptied(graph, group, decision, scores)
                 for group, decision in zip(prunable, _decide(graph, prunable, scores, config),
                                            strict=True)}
    _log_left_whole(graph, groups)
    return PrunePlan(
        mode=PruneMode.STRUCTURED.value,
        model={"name": model.name, "source": model.source,
               "inputs": [spec.to_dict() for spec in model.inputs]},
        config=config.to_dict(),
        layers=_edits(graph, _removed(prunable, decisions)),
        groups=tuple(_group_decision(g, decisions.get(g.id)) for g in groups),
        skipped=tuple(graph.skipped),
        extra={"importance_loss": _loss_note(config, model, data)},
    )


def _channel_graph(model: Model, config: PruneConfig) -> ChannelGraph | None:
    """The torch.fx channel graph when fx traces the model and understands every op; None
    sends the model to the planner of any graph."""
    try:
        graph = build_graph(model, config.exclude)
    except InputError:
        return None
    return None if graph.skipped or config.hidden_ratio else graph


def _decide(graph: ChannelGraph, groups: list[ChannelGroup], scores: dict[int, float],
            config: PruneConfig) -> list[Decision]:
    tensors = [group_scores(g, scores) for g in groups]
    if config.scope == Scope.GLOBAL:
        return decide_global(tensors, config.ratio, config.round_to)
    ratios = _group_ratios(graph, groups, config)
    return [decide_per_group(s, ratios[g.id], config.round_to)
            for g, s in zip(groups, tensors, strict=True)]


def _removed(groups: list[ChannelGroup], decisions: dict[int, Decision]) -> set[int]:
    """The channel classes no decision keeps."""
    removed: set[int] = set()
    for group in groups:
        kept = set(decisions[group.id].keep)
        removed.update(cls for i, cls in enumerate(group.classes) if i not in kept)
    return removed


def _log_left_whole(graph: ChannelGraph, groups: list[ChannelGroup]) -> None:
    for entry in graph.skipped:
        log.info("pruning does not understand '%s' (%s): %s", entry["layer"], entry["type"],
                 entry["why"])
    for group in groups:
        if not group.prunable:
            log.info("channel group of %s left whole: %s", group.producers, group.pinned[0])


def _no_layer_emptied(graph: ChannelGraph, group: ChannelGroup, decision: Decision,
                      scores: dict[int, float]) -> Decision:
    """Keep the best channel of any layer axis that would lose all of its channels (a group
    joined by concatenation can keep channels of one input only)."""
    index = {cls: i for i, cls in enumerate(group.classes)}
    keep = set(decision.keep)
    rescued = []
    for name in group.layers:
        node = graph.layers[name]
        for variables in (node.out_vars, node.in_vars or []):
            mine = [index[c] for c in dict.fromkeys(graph.classes_of(variables)) if c in index]
            if mine and not keep.intersection(mine):
                keep.add(max(mine, key=lambda i: (scores.get(group.classes[i], 0.0), -i)))
                rescued.append(node.name)
    if not rescued:
        return decision
    note = (f"kept one channel of {sorted(set(rescued))} beyond the rounding: no layer is "
            "emptied")
    return replace(decision, keep=tuple(sorted(keep)),
                   note=f"{decision.note}; {note}" if decision.note else note)


def _group_ratios(graph: ChannelGraph, groups: list[ChannelGroup],
                  config: PruneConfig) -> dict[int, float]:
    """``config.ratio``, or the first ``layer_ratios`` rule matching a layer of the group."""
    ratios = {g.id: config.ratio for g in groups}
    if not config.layer_ratios:
        return ratios
    layers = [Layer(node.name, node.type, node.name) for node in graph.layers.values()]
    matched = [({layer.name for layer in Selector((rule,)).select(layers)}, ratio)
               for rule, ratio in config.layer_ratios]
    for group in groups:
        ratios[group.id] = next((ratio for names, ratio in matched
                                 if names & set(group.layers)), config.ratio)
    return ratios


def _edits(graph: ChannelGraph, removed: set[int]) -> tuple[LayerEdit, ...]:
    edits = []
    for node in graph.layers.values():
        out_keep = _kept(graph, node.out_vars, removed)
        in_keep = _kept(graph, node.in_vars, removed) if node.in_vars is not None else None
        if out_keep is None and in_keep is None:
            continue
        edits.append(LayerEdit(node.name, node.type, len(node.out_vars),
                               len(node.in_vars) if node.in_vars is not None else None,
                               out_keep, in_keep))
    return tuple(edits)


def _kept(graph: ChannelGraph, variables: list[int], removed: set[int]) -> tuple[int, ...] | None:
    keep = tuple(i for i, cls in enumerate(graph.classes_of(variables)) if cls not in removed)
    return None if len(keep) == len(variables) else keep


def _group_decision(group: ChannelGroup, decision: Decision | None) -> GroupDecision:
    if decision is None:
        return GroupDecision(group.id, tuple(group.layers), len(group.classes),
                             len(group.classes), None, "left whole: " + "; ".join(group.pinned))
    return GroupDecision(group.id, tuple(group.layers), len(group.classes), len(decision.keep),
                         round(decision.target, 3), decision.note)


def _loss_note(config: PruneConfig, model: Model, data: Dataset | None) -> str | None:
    if config.importance != "taylor":
        return None
    from slimkit.prune.importance import taylor_loss_name

    return taylor_loss_name(data, model.task)


def structured_model(model: Model, plan: PrunePlan) -> Model:
    """A copy of ``model`` with ``plan`` applied; ``model`` itself is not modified."""
    import copy
    from dataclasses import replace

    from slimkit.graph.plan import apply_plan

    module = copy.deepcopy(model.require_module("structured pruning"))
    with torch.no_grad():
        apply_plan(module, plan)
    return replace(model, module=module, name=f"{model.name}-pruned",
                   meta=pruned_meta({**model.meta, "pruned": PruneMode.STRUCTURED.value}, plan))
