"""Resampling rules: irregular, timestamped samples → values at the control ticks.

Times are integer nanoseconds, sample times strictly increasing; values have shape ``(n, d)``.

- ``linear`` (states): piecewise-linear interpolation between the samples around each tick, and
  linear extrapolation from the two edge samples for ticks just outside them (at the ends of an
  episode's window; how far is bounded by the staleness check).
- ``causal_linear`` (states read at a control tick): linear extrapolation from the two latest
  samples at or before the tick, never looking past it. Commands switch exactly at the ticks, so
  a velocity has a kink there that two-sided interpolation would smear; up to the tick it is
  smooth, and this rule is accurate to second order.
- ``zero_order_hold``: the latest sample at or before the tick (the first sample before it).
- ``last_value`` (commands): the latest sample inside the control period ``[t_k, t_k + T)``, i.e.
  the command issued for tick k even when it arrives after the tick; without one, the latest
  earlier sample is held and the tick is flagged.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from pipeline.ingest.config import ResampleRule

Times = NDArray[np.int64]
Values = NDArray[np.float64]


def _line_through(times: Times, values: Values, ticks: Times, first: NDArray[np.intp]) -> Values:
    """At each tick, the line through samples ``first`` and ``first + 1`` (inter- or extrapolated)."""
    t0, t1 = times[first], times[first + 1]
    weight = ((ticks - t0) / (t1 - t0))[:, None]
    line: Values = values[first] + weight * (values[first + 1] - values[first])
    return line


def linear(times: Times, values: Values, ticks: Times) -> Values:
    """Linear interpolation at ``ticks``, extrapolating the edge segments outside the samples."""
    if len(times) == 1:
        return np.repeat(values, len(ticks), axis=0)
    # The segment each tick falls in, clamped to the first/last segment outside the samples.
    first = np.clip(np.searchsorted(times, ticks, side="right") - 1, 0, len(times) - 2)
    return _line_through(times, values, ticks, first)


def causal_linear(times: Times, values: Values, ticks: Times) -> Values:
    """Linear extrapolation from the two latest samples at or before each tick (no look-ahead)."""
    if len(times) == 1:
        return np.repeat(values, len(ticks), axis=0)
    # The segment ending at the latest sample at or before the tick (the first segment before any).
    first = np.clip(np.searchsorted(times, ticks, side="right") - 2, 0, len(times) - 2)
    return _line_through(times, values, ticks, first)


def zero_order_hold(times: Times, values: Values, ticks: Times) -> Values:
    """The latest sample at or before each tick (the first sample for ticks before it)."""
    index = np.searchsorted(times, ticks, side="right") - 1
    return values[np.clip(index, 0, len(times) - 1)]


def last_value(times: Times, values: Values, ticks: Times, period_ns: int) -> tuple[Values, NDArray[np.bool_]]:
    """The latest sample in ``[tick, tick + period)``, else the latest earlier one (held).

    Returns:
        ``(values at ticks, held)`` where ``held[k]`` marks ticks with no sample in their period.
    """
    index = np.searchsorted(times, ticks + period_ns, side="left") - 1
    held = (index < 0) | (times[np.clip(index, 0, None)] < ticks)
    return values[np.clip(index, 0, len(times) - 1)], held


def resample(rule: ResampleRule, times: Times, values: Values, ticks: Times, period_ns: int) -> Values:
    """Apply a rule by name (``last_value`` flags are dropped; use :func:`last_value` to get them)."""
    if rule == "linear":
        return linear(times, values, ticks)
    if rule == "causal_linear":
        return causal_linear(times, values, ticks)
    if rule == "zero_order_hold":
        return zero_order_hold(times, values, ticks)
    return last_value(times, values, ticks, period_ns)[0]


def real_data_at(times: Times, ticks: Times, max_gap_ns: int, horizon_ns: int) -> NDArray[np.bool_]:
    """Whether each tick is covered by real samples rather than extrapolated past them.

    A tick is covered when the samples on either side of it are at most ``max_gap_ns`` apart (it
    is interpolated inside a live stream), or when the latest sample at or before it is at most
    ``horizon_ns`` old (the stream's next sample is simply not due yet). A tick after a stream's
    last sample, or inside a gap, by more than that is not covered: its value would be invented.
    """
    after = np.searchsorted(times, ticks, side="left")
    before = np.searchsorted(times, ticks, side="right") - 1
    has_before, has_after = before >= 0, after < len(times)
    prev = times[np.clip(before, 0, None)]
    nxt = times[np.clip(after, 0, len(times) - 1)]
    bracketed = has_before & has_after & (nxt - prev <= max_gap_ns)
    fresh = has_before & (ticks - prev <= horizon_ns)
    covered: NDArray[np.bool_] = bracketed | fresh
    return covered


def age_at(times: Times, ticks: Times) -> NDArray[np.int64]:
    """Nanoseconds since the latest sample at or before each tick (int64 max when there is none)."""
    index = np.searchsorted(times, ticks, side="right") - 1
    age = ticks - times[np.clip(index, 0, None)]
    return np.where(index < 0, np.iinfo(np.int64).max, age)
