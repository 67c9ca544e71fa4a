"""SmoothQuant for decoders, end to end on a torch model: observe activations on calibration
windows, measure each site's emulated W8A8 error for every candidate alpha, choose (per layer,
globally, fixed, or off) and fold the scales exactly (:mod:`slimkit.llm.w8a8.sites`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimkit.llm.w8a8.calibrate import choose, observe, search_alpha, weight_max
from slimkit.llm.w8a8.qmath import smoothing_scales
from slimkit.llm.w8a8.sites import decoder_sites, fold


@dataclass(frozen=True)
class SmoothingPlan:
    """How smoothing is chosen (the config's fields, resolved)."""

    mode: str  # per-layer, global, fixed, off
    alpha: float
    grid: tuple[float, ...]
    activations: str  # token or tensor: the quantization emulated in the search
    qmax: int  # 127, or 63 for 7-bit weights
    search_windows: int


def smooth_decoder(hf: Any, windows: Sequence[np.ndarray],
                   plan: SmoothingPlan) -> list[dict[str, Any]]:
    """Smooth ``hf`` in place; one record per site (alpha chosen, emulated relative error of
    its W8A8 MatMuls without smoothing and with the chosen alpha)."""
    sites = decoder_sites(hf)
    if plan.mode == "off":
        return [{"site": s.name, "alpha": None, "consumers": list(s.consumers)} for s in sites]
    act_max = observe(hf, sites, windows)
    errors = search_alpha(hf, sites, windows[:plan.search_windows], act_max, plan.grid,
                          plan.activations, plan.qmax)
    alphas = choose(errors, plan.mode, plan.alpha)
    # every scale from the model as observed, then every fold: a fold changes weights that a
    # later site's scale would otherwise read (up_proj's rows are mlp_in's columns too)
    scales = {s.name: smoothing_scales(act_max[s.name], weight_max(hf, s), alpha)
              for s in sites if (alpha := alphas[s.name]) is not None}
    records = []
    for site in sites:
        alpha = alphas[site.name]
        entry = errors[site.name]
        relative = entry.relative()
        record: dict[str, Any] = {"site": site.name, "alpha": alpha,
                                  "consumers": list(site.consumers),
                                  "error_unsmoothed": float(relative[0])}
        if alpha in entry.candidates:
            record["error_smoothed"] = float(relative[entry.candidates.index(alpha)])
        if site.name in scales:
            fold(hf, site, scales[site.name])
        records.append(record)
    return records
