"""Schedules over training steps: the cubic sparsity schedule of Zhu & Gupta (2017), used by
gradual pruning (iterative structured steps, unstructured masks in Deep Compression)."""

from __future__ import annotations

from slimkit.errors import InputError


def cubic_sparsity(step: int, final: float, end_step: int, *, initial: float = 0.0,
                   begin_step: int = 0, frequency: int = 1) -> float:
    """The sparsity at ``step`` of Zhu & Gupta's gradual schedule.

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_n - t_0))**3`` for ``t_0 <= t <= t_n``,
    ``s_i`` before ``t_0`` and ``s_f`` after; ``t`` is taken at the last multiple of
    ``frequency`` since ``t_0`` (masks are updated every ``frequency`` steps).

    Example:
        >>> [round(cubic_sparsity(t, 0.8, 100), 4) for t in (0, 50, 100, 200)]
        [0.0, 0.7, 0.8, 0.8]
    """
    for value, what in ((initial, "initial sparsity"), (final, "final sparsity")):
        if not 0.0 <= value < 1.0:
            raise InputError(f"{what} must be in [0, 1), got {value}")
    if end_step <= begin_step or frequency < 1:
        raise InputError("the schedule needs end_step > begin_step and frequency >= 1")
    if step <= begin_step:
        return initial
    if step >= end_step:
        return final
    done = (step - begin_step) // frequency * frequency
    fraction = 1.0 - done / (end_step - begin_step)
    return final + (initial - final) * fraction**3
