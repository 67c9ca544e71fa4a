"""The sensitivity scan run before the search: each channel group pruned alone at each scan
ratio, and each layer alone with int8-rounded weights, scored without fine-tuning. It bounds
each group's ratios and picks the layers whose int8/float choice the search makes. Cached on
disk, keyed by the model digest, the data and the scan settings."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from slimkit.progress import progress
from slimkit.search.proxy import TrialContext, candidate, fake_quantize

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: version 1 scanned with no group known, so every drop read 0.0


def scan(ctx: TrialContext, groups: list[tuple[str, int]], ratios: tuple[float, ...],
         layers: list[str], cache: Path | None, model_digest: str) -> dict[str, Any]:
    """``{"prune": {group: {ratio: drop}}, "int8": {layer: drop}}``, from the cache if there."""
    key = _key(model_digest, ctx, groups, ratios, layers)
    path = cache / f"sensitivity-{key}.json" if cache else None
    if path is not None and path.is_file():
        try:
            cached: dict[str, Any] = json.loads(path.read_text())
            if cached.get("key") == key:
                log.info("sensitivity scan read from %s", path)
                return {**cached, "cached": True}
        except (OSError, ValueError):
            pass  # a damaged cache is recomputed
    result: dict[str, Any] = {"key": key, "prune": {}, "int8": {}}
    scan_ratios = [r for r in ratios if r > 0]
    for name, _ in progress(groups, "sensitivity: groups", len(groups)):
        result["prune"][name] = {str(r): _drop(ctx, {f"ratio:{name}": r}) for r in scan_ratios}
    for layer in progress(layers, "sensitivity: int8 layers", len(layers)):
        scored = ctx.scorer.score(fake_quantize(ctx.model, {layer}))
        result["int8"][layer] = round(ctx.scorer.baseline - scored, 6)
    if path is not None:
        from slimkit.io import write_text_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(result, indent=1))
    return {**result, "cached": False}


def _drop(ctx: TrialContext, params: dict[str, float]) -> float:
    return round(ctx.scorer.baseline - ctx.scorer.score(candidate(ctx, params)), 6)


def allowed_ratios(drops: dict[str, float], ratios: tuple[float, ...],
                   limit: float) -> tuple[float, ...]:
    """The ratios up to the largest scanned one whose drop alone stays within ``limit``
    (0, and the smallest ratio, are always allowed).

    Example:
        >>> allowed_ratios({"0.5": 0.01, "0.75": 0.4}, (0.0, 0.25, 0.5, 0.75), 0.3)
        (0.0, 0.25, 0.5)
        >>> allowed_ratios({"0.5": 0.5}, (0.5,), 0.3)
        (0.5,)
    """
    ok = [float(r) for r, d in drops.items() if d <= limit]
    top = max(ok, default=min(ratios))
    return tuple(r for r in ratios if r <= top or r == 0.0)


def most_sensitive(int8_drops: dict[str, float], count: int) -> tuple[str, ...]:
    """The ``count`` layers whose int8 weights cost the most metric (ties: layer order).

    Example:
        >>> most_sensitive({"a": 0.0, "b": 0.2, "c": 0.1}, 2)
        ('b', 'c')
    """
    order = sorted(int8_drops, key=lambda name: -int8_drops[name])
    return tuple(order[:count])


def _key(digest: str, ctx: TrialContext, groups: list[tuple[str, int]],
         ratios: tuple[float, ...], layers: list[str]) -> str:
    data = ctx.scorer.data
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, digest, groups, list(ratios), layers, ctx.scorer.name,
                         ctx.seed, ctx.bn_batches]).encode())
    for name in sorted(data.inputs):
        h.update(data.inputs[name].tobytes())
    if data.labels is not None:
        h.update(data.labels.tobytes())
    if ctx.bn_batches and ctx.train is not None:  # the batch-norm statistics come from it
        for name in sorted(ctx.train.inputs):
            h.update(ctx.train.inputs[name].tobytes())
    return h.hexdigest()[:20]
