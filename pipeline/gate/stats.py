"""Gate statistics: means with cluster-bootstrap confidence intervals.

Episodes of the same context are not independent draws (they share the context), so intervals
resample *contexts* with replacement and average their episodes (a cluster bootstrap). With one
episode per context, or a single context, this is the ordinary bootstrap over episodes. Percentile
intervals.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def cluster_bootstrap(
    values: NDArray[np.float64],
    clusters: NDArray[np.int64],
    resamples: int,
    confidence: float,
    rng: np.random.Generator,
) -> tuple[float, float, float, NDArray[np.float64]]:
    """Mean of ``values`` and its percentile CI, resampling whole clusters.

    Args:
        values: One value per episode.
        clusters: The cluster (context) of each episode.
        resamples: Bootstrap resamples B.
        confidence: Level of the interval, e.g. 0.95.
        rng: Source of the resampling.

    Returns:
        ``(mean, low, high, draws)`` where ``draws`` are the B resampled means (to combine, e.g. a gap).
        An empty ``values`` gives NaN everywhere.
    """
    if len(values) == 0:
        nan = float("nan")
        return nan, nan, nan, np.full(resamples, nan)
    labels, index = np.unique(clusters, return_inverse=True)
    if len(labels) == 1:  # one cluster says nothing about its spread: resample its episodes instead
        labels, index = np.arange(len(values)), np.arange(len(values))
    sums = np.bincount(index, weights=values, minlength=len(labels))
    counts = np.bincount(index, minlength=len(labels)).astype(np.float64)
    picks = rng.integers(len(labels), size=(resamples, len(labels)))
    draws = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = interval(draws, confidence)
    return float(values.mean()), low, high, draws


def interval(draws: NDArray[np.float64], confidence: float) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap draws."""
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return float(low), float(high)
