"""Ranks from a sensitivity scan: every candidate layer factorised alone at several rank ratios,
the output's SQNR against the original measured on data, and each layer given the smallest
rank whose SQNR stays above a floor (layers that no scanned rank keeps above it are left whole).
The result is an ordinary ``LowRankConfig`` with ``layer_ranks``, so the choice is replayable."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from slimkit.data import Dataset, synthetic
from slimkit.lowrank.api import LowRankResult, low_rank
from slimkit.lowrank.config import LowRankConfig, RankRule
from slimkit.model import Model
from slimkit.progress import progress

SCAN_RATIOS = (0.125, 0.25, 0.5)


@dataclass
class RankScan:
    """``rows``: one per (layer, ratio) with the ranks and the SQNR of that layer alone."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def config_for(self, base: LowRankConfig, min_sqnr_db: float) -> LowRankConfig:
        """``base`` with, per layer, the smallest scanned rank whose SQNR >= ``min_sqnr_db``;
        only those layers are factorised.

        Example:
            >>> scan = RankScan([{"layer": "fc", "ratio": 0.25, "ranks": [2], "sqnr_db": 30.0},
            ...                  {"layer": "fc", "ratio": 0.5, "ranks": [4], "sqnr_db": 45.0}])
            >>> scan.config_for(LowRankConfig(), 40.0).layer_ranks
            (('name:fc', 4),)
        """
        chosen: dict[str, int] = {}
        for row in sorted(self.rows, key=lambda r: (r["layer"], r["ratio"])):
            if row["layer"] not in chosen and row["sqnr_db"] >= min_sqnr_db and row["ranks"]:
                chosen[row["layer"]] = int(max(row["ranks"]))
        rules = tuple((f"name:{name}", rank) for name, rank in chosen.items())
        return replace(base, rule=RankRule.RATIO, ratio=1.0, layer_ranks=rules,
                       layers=tuple(rule for rule, _ in rules) or base.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}


def rank_scan(model: Model, data: Dataset, base: LowRankConfig | None = None,
              ratios: tuple[float, ...] = SCAN_RATIOS) -> RankScan:
    """Factorise each layer that ``base`` selects alone, at each rank ratio; SQNR on ``data``.

    Example:
        >>> from slimkit.testing import tiny_model
        >>> from slimkit.data import synthetic
        >>> m = tiny_model("mlp")
        >>> scan = rank_scan(m, synthetic(m.inputs, 16), ratios=(0.5,))
        >>> sorted({row["layer"] for row in scan.rows})
        ['fc1', 'fc2']
    """
    base = replace(base or LowRankConfig(), verify=False)
    probe = low_rank(model, replace(base, rule=RankRule.RATIO, ratio=max(ratios),
                                    layer_ranks=()), data)
    layers = [row["name"] for row in probe.sections["layers"]]
    scan = RankScan()
    for name in progress(layers, "rank sensitivity", len(layers)):
        for ratio in ratios:
            single = replace(base, rule=RankRule.RATIO, ratio=ratio, layers=(f"name:{name}",),
                             exclude=(), layer_ranks=())
            result = low_rank(model, single, data)
            rows = result.sections["layers"]
            scan.rows.append({"layer": name, "ratio": ratio,
                              "ranks": rows[0]["ranks"] if rows else [],
                              "sqnr_db": result.sections["fidelity"]["sqnr_db"]})
    return scan


def low_rank_by_scan(model: Model, config: LowRankConfig | None, data: Dataset | None,
                     min_sqnr_db: float) -> LowRankResult:
    """``low_rank`` with each layer's rank chosen by a scan: the smallest scanned rank (1/8,
    1/4, 1/2 of full) whose output SQNR stays >= ``min_sqnr_db`` when that layer alone is
    factorised (on 64 examples of ``data``, or 16 synthetic ones); layers none keeps are left
    whole."""
    config = config or LowRankConfig()
    scan_data = data.take(64) if data is not None else synthetic(model.inputs, 16, seed=1)
    return low_rank(model, rank_scan(model, scan_data, config).config_for(config, min_sqnr_db),
                    data)
