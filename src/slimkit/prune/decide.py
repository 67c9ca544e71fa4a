"""How many channels each group keeps and which: pure functions of scores, ratios and the
rounding multiple (no module is touched here)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Decision:
    """A group's outcome: the indices (into the group's classes) it keeps, and why."""

    keep: tuple[int, ...]
    target: float  # channels the ratio asked to keep, before rounding
    note: str | None = None


def kept_count(channels: int, target: float, multiple: int) -> tuple[int, str | None]:
    """Channels to keep: ``target`` rounded to the nearest multiple of ``multiple``, at least
    one multiple (a group is never emptied) and at most ``channels``.

    Example:
        >>> kept_count(64, 32.0, 8), kept_count(64, 30.0, 8)
        ((32, None), (32, None))
        >>> kept_count(64, 3.0, 8)[0], kept_count(6, 3.0, 8)
        (8, (6, 'only 6 channels, at most one multiple of 8: kept whole'))
    """
    if target >= channels:
        return channels, None
    if channels <= multiple:
        return channels, (f"only {channels} channels, at most one multiple of {multiple}: "
                          "kept whole")
    keep = int(math.floor(target / multiple + 0.5)) * multiple
    if keep < multiple:
        return multiple, (f"kept {multiple} channels (one multiple of {multiple}) rather than "
                          f"{target:.3g}: a group is never emptied")
    return min(keep, channels), None


def top_indices(scores: torch.Tensor, count: int) -> tuple[int, ...]:
    """The indices of the ``count`` highest scores, in ascending index order (ties: lower
    index first, so the choice is deterministic)."""
    values = scores.tolist()
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return tuple(sorted(order[:count]))


def decide_per_group(scores: torch.Tensor, ratio: float, multiple: int) -> Decision:
    """Keep ``1 - ratio`` of one group's channels, the most important ones.

    Example:
        >>> decide_per_group(torch.tensor([4.0, 1.0, 3.0, 2.0]), 0.5, 1).keep
        (0, 2)
    """
    target = len(scores) * (1.0 - ratio)
    count, note = kept_count(len(scores), target, multiple)
    return Decision(top_indices(scores, count), target, note)


def decide_global(scores: list[torch.Tensor], ratio: float, multiple: int) -> list[Decision]:
    """One ranking over all groups: each group's scores are divided by their mean (so layers
    of different scales compare), the lowest ``ratio`` of all channels are marked, and each
    group keeps its unmarked count, rounded as in :func:`kept_count`.

    Example:
        >>> [d.keep for d in decide_global([torch.tensor([1.0, 1.0]),
        ...                                 torch.tensor([0.1, 1.9])], 0.25, 1)]
        [(0, 1), (1,)]
    """
    normalised = [s / s.mean() if len(s) and float(s.mean()) > 0 else s for s in scores]
    flat = [(float(v), g, i) for g, s in enumerate(normalised) for i, v in enumerate(s)]
    marked = sorted(flat)[:math.floor(len(flat) * ratio)]
    removed = [0] * len(scores)
    for _, g, _ in marked:
        removed[g] += 1
    decisions = []
    for s, group_scores, dropped in zip(normalised, scores, removed, strict=True):
        target = float(len(group_scores) - dropped)
        count, note = kept_count(len(group_scores), target, multiple)
        decisions.append(Decision(top_indices(s, count), target, note))
    return decisions
