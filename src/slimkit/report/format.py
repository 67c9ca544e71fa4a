"""Numbers and values as people read them in tables (the terminal, Markdown and HTML)."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any) -> str:
    """A compact human form of a value for tables: 4 significant digits, thousands separated
    (no exponent for large numbers: people read 19,140/s, not 1.914e+04).

    Example:
        >>> fmt(19140.4), fmt(0.052531), fmt(15766), fmt(2026), fmt(5.7e-06)
        ('19,140', '0.05253', '15,766', '2026', '5.7e-06')
    """
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e3 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 1e4 else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    return str(value)
