"""Plots of the HTML report as inline SVG, drawn with matplotlib's object API (no pyplot: no
global figure state, and rc settings only inside ``rc_context``).

Every plot keeps to a readable size: bar charts show the ``TOP_N`` largest items and fold the
rest into one "N others" bar, so a model with hundreds of layers still gives a legible chart.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Sequence
from typing import Any

TOP_N = 25
WIDTH_IN = 7.5
_counter = itertools.count()
_RC: Any = {"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
       "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3}
PALETTE = ("#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2")


def top_n(items: Sequence[tuple[str, float]], n: int = TOP_N,
          rest: str = "mean") -> list[tuple[str, float]]:
    """The ``n`` largest ``(label, value)`` pairs, the others folded into one pair.

    ``rest`` says how the others fold: ``"sum"`` (shares, times) or ``"mean"`` (ratios).

    Example:
        >>> top_n([("a", 3.0), ("b", 1.0), ("c", 2.0)], n=1, rest="sum")
        [('a', 3.0), ('2 others (sum)', 3.0)]
    """
    ordered = sorted(items, key=lambda kv: -abs(kv[1]))
    if len(ordered) <= n + 1:
        return list(ordered)
    head, tail = ordered[:n], ordered[n:]
    values = [v for _, v in tail]
    folded = sum(values) if rest == "sum" else sum(values) / len(values)
    return [*head, (f"{len(tail)} others ({rest})", folded)]


def _figure(height_in: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTH_IN, height_in), layout="constrained")


def to_svg(fig: Any, label: str) -> str:
    """The figure as an inline ``<svg>`` that scales with its container (accessible label)."""
    from matplotlib import rc_context

    buf = io.StringIO()
    with rc_context({"svg.hashsalt": f"slimkit-{next(_counter)}"}):  # unique ids per plot
        fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    # fixed pt sizes -> scale with the page; the viewBox keeps the aspect ratio
    svg = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"',
                 lambda m: f'<svg{m.group(1)} class="plot" role="img" '
                           f'aria-label="{_attr(label)}"', svg, count=1)
    return svg


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def bars(items: Sequence[tuple[str, float]], title: str, xlabel: str,
         rest: str = "mean") -> str:
    """Horizontal bars, largest first, top-N plus the rest folded."""
    from matplotlib import rc_context

    shown = top_n(items, rest=rest)
    with rc_context(_RC):
        fig = _figure(0.6 + 0.24 * max(len(shown), 2))
        ax = fig.add_subplot()
        labels = [_short(label) for label, _ in shown]
        ax.barh(range(len(shown)), [v for _, v in shown], color=PALETTE[0])
        ax.set_yticks(range(len(shown)), labels)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.set_title(title, loc="left")
        return to_svg(fig, title)


def grouped_bars(series: dict[str, dict[str, float]], title: str, xlabel: str) -> str:
    """Bars per category for several series (e.g. op-type time before and after)."""
    from matplotlib import rc_context

    totals: dict[str, float] = {}
    for values in series.values():
        for key, value in values.items():
            totals[key] = max(totals.get(key, 0.0), abs(value))
    keep = [k for k, _ in sorted(totals.items(), key=lambda kv: -kv[1])[:TOP_N]]
    others = [k for k in totals if k not in keep]
    cats = keep + (["others"] if others else [])
    width = 0.8 / max(len(series), 1)
    with rc_context(_RC):
        fig = _figure(0.8 + 0.22 * len(series) * max(len(cats), 2))
        ax = fig.add_subplot()
        for i, (name, values) in enumerate(series.items()):
            ys = [values.get(c, 0.0) for c in keep]
            if others:
                ys.append(sum(values.get(c, 0.0) for c in others))
            ax.barh([j + i * width for j in range(len(cats))], ys, height=width, label=name,
                    color=PALETTE[i % len(PALETTE)])
        ax.set_yticks([j + width * (len(series) - 1) / 2 for j in range(len(cats))],
                      [_short(c) for c in cats])
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.set_title(title, loc="left")
        ax.legend(loc="lower right")
        return to_svg(fig, title)


def pareto(points: Sequence[tuple[float, float]], front: Sequence[tuple[float, float]],
           labels: tuple[str, str], title: str) -> str:
    """Every trial as a dot, the Pareto front as a line."""
    from matplotlib import rc_context

    with rc_context(_RC):
        fig = _figure(3.6)
        ax = fig.add_subplot()
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, alpha=0.5,
                   color=PALETTE[0], label="trials")
        ordered = sorted(front)
        ax.plot([p[0] for p in ordered], [p[1] for p in ordered], "-o", color=PALETTE[1],
                markersize=4, label="Pareto front")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_title(title, loc="left")
        ax.legend()
        return to_svg(fig, title)


def curves(series: dict[str, Sequence[tuple[float, float]]], labels: tuple[str, str],
           title: str, limit: int = 12) -> str:
    """One line per series (e.g. metric vs pruning ratio per layer); the ``limit`` series that
    move most are drawn, so a chart of hundreds of layers stays legible."""
    from matplotlib import rc_context

    def spread(points: Sequence[tuple[float, float]]) -> float:
        ys = [p[1] for p in points]
        return max(ys) - min(ys) if ys else 0.0

    chosen = sorted(series.items(), key=lambda kv: -spread(kv[1]))[:limit]
    with rc_context(_RC):
        fig = _figure(3.6)
        ax = fig.add_subplot()
        for i, (name, points) in enumerate(chosen):
            ordered = sorted(points)
            ax.plot([p[0] for p in ordered], [p[1] for p in ordered], marker="o", markersize=3,
                    label=_short(name, 30), color=PALETTE[i % len(PALETTE)],
                    linestyle=("-", "--")[i // len(PALETTE) % 2])
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_title(title + (f" ({limit} of {len(series)} that move most)"
                              if len(series) > limit else ""), loc="left")
        ax.legend(fontsize=7, ncol=2)
        return to_svg(fig, title)


def pareto_front(points: Sequence[tuple[float, float]], minimize: tuple[bool, bool]
                 ) -> list[tuple[float, float]]:
    """The points no other point beats on both objectives.

    Example:
        >>> pareto_front([(1, 1), (2, 3), (3, 2), (1, 2)], (True, False))
        [(1, 2), (2, 3)]
    """
    def better_or_equal(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return all((x <= y) if lo else (x >= y) for x, y, lo in zip(a, b, minimize, strict=True))

    front = [p for p in points if not any(q != p and better_or_equal(q, p) for q in points)]
    return sorted(set(front))


def _short(label: str, limit: int = 38) -> str:
    return label if len(label) <= limit else "…" + label[-(limit - 1):]
