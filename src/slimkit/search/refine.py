"""The search's second proxy round, calibrated by fine-tuning.

A proxy scored before fine-tuning cannot say which drop fine-tuning will recover, but the first
finalists can: the largest proxy drop of a finalist that met the budget after fine-tuning
(below every proxy drop that failed) is a measured bound. The second round searches again
under that bound, one objective (the cost), warm-started from the first round's points near the
boundary (their proxy results reused, not recomputed), and its points cheaper than the best
finalist so far are fine-tuned in bisection order. This is what turns "the uniform point that
holds" into "a cheaper non-uniform point of the same proxy quality"."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from slimkit.search.config import SearchConfig
from slimkit.search.study import CONSTRAINT

log = logging.getLogger(__name__)
WARM_POINTS = 8  # first-round points that seed the second round


def calibrated_limit(rows: list[dict[str, Any]]) -> float | None:
    """The largest proxy drop of a finalist that met the budget, among those below every
    failed finalist's proxy drop; None when no finalist met it.

    Example:
        >>> rows = [{"met_budget": True, "proxy": {"drop": 0.3}},
        ...         {"met_budget": True, "proxy": {"drop": 0.7}},
        ...         {"met_budget": False, "proxy": {"drop": 0.6}}]
        >>> calibrated_limit(rows)
        0.3
    """
    met = [float(r["proxy"]["drop"]) for r in rows if r["met_budget"]]
    failed = [float(r["proxy"]["drop"]) for r in rows if not r["met_budget"]]
    if not met:
        return None
    below = [d for d in met if all(d < f for f in failed)]
    return max(below) if below else min(met)


def round_config(config: SearchConfig, limit: float) -> SearchConfig:
    """The second round's config: the calibrated proxy limit and its trial count."""
    return replace(config, proxy_max_drop=round(limit, 6), trials=config.second_round_trials)


def warm_points(trials: list[Any], limit: float, count: int = WARM_POINTS) -> list[Any]:
    """First-round trials within the limit, cheapest first: where the second round starts."""
    within = [t for t in trials if t.user_attrs.get("drop", 1e9) <= limit]
    return sorted(within, key=lambda t: (t.values[0], t.number))[:count]


def cheaper_feasible(trials: list[Any], best_cost: float) -> list[Any]:
    """Second-round trials feasible under its limit and cheaper than ``best_cost`` (the
    proxy cost of the best finalist so far), cheapest first."""
    ok = [t for t in trials if t.user_attrs.get(CONSTRAINT, 1.0) <= 0 and
          t.values[0] < best_cost]
    return sorted(ok, key=lambda t: (t.values[0], t.number))


def known_results(trials: list[Any]) -> dict[str, dict[str, float]]:
    """Proxy results of finished trials by their params (a JSON key): reused, not rerun."""
    import json

    keys = ("macs", "bytes", "metric", "drop")
    return {json.dumps(t.params, sort_keys=True): {k: t.user_attrs[k] for k in keys}
            for t in trials if all(k in t.user_attrs for k in keys)}
