"""Statistics for SmoothQuant from calibration text, and the alpha chosen by measured error.

Split as observe -> decide -> apply: :func:`observe` runs the float model over calibration
windows with hooks on each site's first consumer (per-channel ``max|x|``); :func:`search_alpha`
runs a second pass in which every site's W8A8 MatMuls are emulated in torch
(:mod:`slimkit.llm.w8a8.qmath`, the very arithmetic of ONNX Runtime's dynamic int8 path) for
each candidate alpha (and for no smoothing), accumulating the squared output error; the caller
folds the winners (:func:`slimkit.llm.w8a8.sites.fold`). Hooks are removed afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from slimkit.errors import DataError
from slimkit.llm.w8a8.qmath import matmul_error, smoothing_scales
from slimkit.llm.w8a8.sites import Site
from slimkit.progress import progress

NO_SMOOTHING = None  # the candidate "leave this site as it is"


def calibration_windows(tokenizer: Any, text: str, source: str, window: int,
                        max_tokens: int) -> list[np.ndarray]:
    """Disjoint windows of ``window`` token ids from the first ``max_tokens`` tokens of
    ``text``; a text shorter than one window is refused."""
    from slimkit.llm.evaluate import token_ids

    ids = token_ids(tokenizer, text, max_tokens)
    if len(ids) < window:
        raise DataError(f"calibration text '{source}' has {len(ids)} tokens, fewer than one "
                        f"window of {window}; give a longer text or a smaller "
                        "calibration window")
    return [ids[i:i + window] for i in range(0, len(ids) - window + 1, window)]


@contextlib.contextmanager
def _consumer_hooks(hf: Any, sites: Sequence[Site], fn: Any) -> Iterator[None]:
    """Call ``fn(site, x)`` with the 2-D input of each site's first consumer on every forward."""
    handles = []
    for site in sites:
        def hook(_: Any, args: tuple[Any, ...], site: Site = site) -> None:
            x = args[0].detach()
            fn(site, x.reshape(-1, x.shape[-1]).float())
        handles.append(hf.get_submodule(site.consumers[0]).register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _run(hf: Any, windows: Sequence[np.ndarray], what: str) -> None:
    with torch.no_grad():
        for ids in progress(windows, what, total=len(windows)):
            hf(input_ids=torch.from_numpy(np.asarray(ids, np.int64))[None], use_cache=False)


def observe(hf: Any, sites: Sequence[Site],
            windows: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """Per-channel ``max|x|`` of each site's channels (pooled over GQA groups) over
    ``windows``."""
    act_max: dict[str, torch.Tensor] = {}

    def record(site: Site, x: torch.Tensor) -> None:
        amax = x.abs().amax(dim=0)
        act_max[site.name] = torch.maximum(act_max[site.name], amax) \
            if site.name in act_max else amax

    with _consumer_hooks(hf, sites, record):
        _run(hf, windows, "observing activations")
    return {site.name: site.pool(act_max[site.name]) for site in sites}


def weight_max(hf: Any, site: Site) -> torch.Tensor:
    """Per-channel ``max|W|`` over the site's consumers' columns, pooled like activations."""
    columns = torch.stack([hf.get_submodule(c).weight.detach().abs().amax(dim=0)
                           for c in site.consumers]).amax(dim=0)
    return site.pool(columns)


@dataclass
class SiteErrors:
    """The emulated W8A8 output error of one site for each candidate (None = no smoothing)."""

    candidates: tuple[float | None, ...]
    errors: np.ndarray  # squared error per candidate, summed over consumers and windows
    energy: float = 0.0  # squared norm of the float outputs, for relative errors

    def relative(self) -> np.ndarray:
        return self.errors / max(self.energy, 1e-30)  # type: ignore[no-any-return]


def search_alpha(hf: Any, sites: Sequence[Site], windows: Sequence[np.ndarray],
                 act_max: dict[str, torch.Tensor], grid: Sequence[float],
                 activations: str = "token", qmax: int = 127) -> dict[str, SiteErrors]:
    """Emulated W8A8 error of every site for no smoothing and each alpha of ``grid``."""
    candidates: tuple[float | None, ...] = (NO_SMOOTHING, *grid)
    scales = {site.name: [None if a is None else site.expand(
        smoothing_scales(act_max[site.name], weight_max(hf, site), a)) for a in candidates]
        for site in sites}
    found = {site.name: SiteErrors(candidates, np.zeros(len(candidates))) for site in sites}

    def measure(site: Site, x: torch.Tensor) -> None:
        weights = [hf.get_submodule(c).weight.detach().float() for c in site.consumers]
        outputs = [x @ w.T for w in weights]
        entry = found[site.name]
        entry.energy += sum(float(y.double().square().sum()) for y in outputs)
        for i, scale in enumerate(scales[site.name]):
            entry.errors[i] += matmul_error(x, weights, outputs, scale, activations, qmax)

    with _consumer_hooks(hf, sites, measure):
        _run(hf, windows, "searching smoothing strength")
    return found


def choose(errors: dict[str, SiteErrors], mode: str,
           alpha: float | None = None) -> dict[str, float | None]:
    """The alpha of each site: ``per-layer`` (each its least error), ``global`` (one for all,
    least summed relative error), ``fixed`` (``alpha`` everywhere) or ``off`` (None)."""
    if mode == "off":
        return {name: None for name in errors}
    if mode == "fixed":
        return {name: alpha for name in errors}
    if mode == "global":
        total = np.sum([e.relative() for e in errors.values()], axis=0)
        best = next(iter(errors.values())).candidates[int(np.argmin(total))]
        return {name: best for name in errors}
    return {name: e.candidates[int(np.argmin(e.errors))] for name, e in errors.items()}
