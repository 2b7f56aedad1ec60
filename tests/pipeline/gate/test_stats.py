import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.gate.stats import cluster_bootstrap, interval

values = arrays(np.float64, st.integers(1, 40), elements=st.floats(0.0, 1.0))


@settings(max_examples=50, deadline=None)
@given(values, st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_interval_lies_within_the_data_and_the_mean_is_the_sample_mean(
    sample: np.ndarray, per_cluster: int, seed: int
) -> None:
    clusters = np.arange(len(sample)) // per_cluster
    mean, low, high, draws = cluster_bootstrap(sample, clusters, 200, 0.95, np.random.default_rng(seed))
    assert mean == sample.mean()
    assert sample.min() - 1e-12 <= low <= high <= sample.max() + 1e-12
    assert draws.shape == (200,)


@given(st.floats(0.0, 1.0), st.integers(1, 30))
def test_constant_values_have_a_zero_width_interval(value: float, count: int) -> None:
    mean, low, high, _ = cluster_bootstrap(np.full(count, value), np.arange(count), 100, 0.95, np.random.default_rng(0))
    assert mean == pytest.approx(value) and low == pytest.approx(value) and high == pytest.approx(value)


def test_resampling_whole_clusters_widens_the_interval_of_correlated_episodes() -> None:
    # 10 contexts, 10 episodes each, every context all-success or all-failure: 10 effective samples, not 100.
    sample = np.repeat(np.array([1.0, 0.0] * 5), 10)
    rng = np.random.default_rng(0)
    _, low_c, high_c, _ = cluster_bootstrap(sample, np.repeat(np.arange(10), 10), 4000, 0.95, rng)
    _, low_i, high_i, _ = cluster_bootstrap(sample, np.arange(100), 4000, 0.95, rng)
    assert high_c - low_c > 2.0 * (high_i - low_i)


def test_bootstrap_interval_matches_the_normal_approximation_for_a_proportion() -> None:
    rng = np.random.default_rng(1)
    sample = (rng.random(400) < 0.8).astype(np.float64)
    mean, low, high, _ = cluster_bootstrap(sample, np.arange(400), 4000, 0.95, rng)
    half = 1.96 * np.sqrt(mean * (1 - mean) / 400)
    assert abs((high - low) / 2 - half) < 0.01


def test_empty_input_gives_nan_and_interval_is_central() -> None:
    mean, low, high, _ = cluster_bootstrap(np.empty(0), np.empty(0, dtype=np.int64), 100, 0.95, np.random.default_rng())
    assert np.isnan([mean, low, high]).all()
    assert interval(np.arange(101, dtype=np.float64), 0.9) == pytest.approx((5.0, 95.0))
