import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.episodes import anchor_ticks
from pipeline.ingest.resample import age_at, last_value, linear, real_data_at, resample, zero_order_hold


@st.composite
def samples(draw: st.DrawFn, min_size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Strictly increasing integer-ns times and 2-D values."""
    steps = draw(st.lists(st.integers(1, 10_000_000), min_size=min_size - 1, max_size=40))
    times = np.cumsum([draw(st.integers(0, 10**12)), *steps]).astype(np.int64)
    values = np.array(draw(st.lists(st.floats(-100, 100), min_size=2 * len(times), max_size=2 * len(times))))
    return times, values.reshape(len(times), 2)


ticks_strategy = st.lists(st.integers(-20_000_000, 500_000_000), min_size=1, max_size=30)


@settings(max_examples=200)
@given(data=samples(), slope=st.floats(-5, 5), offset=st.floats(-5, 5), ticks=ticks_strategy)
def test_linear_reproduces_affine_signals_inside_and_outside(
    data: tuple[np.ndarray, np.ndarray], slope: float, offset: float, ticks: list[int]
) -> None:
    times, _ = data
    seconds = (times - times[0]) / 1e9
    values = np.stack([offset + slope * seconds, -slope * seconds], axis=1)
    query = times[0] + np.array(ticks, dtype=np.int64)
    expected = np.stack([offset + slope * (query - times[0]) / 1e9, -slope * (query - times[0]) / 1e9], axis=1)
    np.testing.assert_allclose(linear(times, values, query), expected, atol=1e-6)


@given(data=samples())
def test_every_rule_returns_the_sample_at_its_own_time(data: tuple[np.ndarray, np.ndarray]) -> None:
    times, values = data
    np.testing.assert_allclose(linear(times, values, times), values, atol=1e-9)
    np.testing.assert_array_equal(zero_order_hold(times, values, times), values)
    np.testing.assert_array_equal(age_at(times, times), 0)


@given(data=samples(), ticks=ticks_strategy)
def test_zero_order_hold_takes_the_latest_sample_at_or_before(
    data: tuple[np.ndarray, np.ndarray], ticks: list[int]
) -> None:
    times, values = data
    query = times[0] + np.array(ticks, dtype=np.int64)
    held = zero_order_hold(times, values, query)
    for tick, row in zip(query, held, strict=True):
        before = np.flatnonzero(times <= tick)
        np.testing.assert_array_equal(row, values[before[-1] if len(before) else 0])


@given(data=samples(min_size=1), ticks=ticks_strategy, period=st.integers(1, 30_000_000))
def test_last_value_takes_the_latest_sample_in_the_period(
    data: tuple[np.ndarray, np.ndarray], ticks: list[int], period: int
) -> None:
    times, values = data
    query = times[0] + np.array(ticks, dtype=np.int64)
    result, held = last_value(times, values, query, period)
    for tick, row, was_held in zip(query, result, held, strict=True):
        inside = np.flatnonzero((times >= tick) & (times < tick + period))
        assert was_held == (len(inside) == 0)
        if len(inside):
            np.testing.assert_array_equal(row, values[inside[-1]])
        else:
            before = np.flatnonzero(times < tick)
            np.testing.assert_array_equal(row, values[before[-1] if len(before) else 0])


@given(data=samples(min_size=1), ticks=ticks_strategy)
def test_age_is_time_since_the_latest_sample(data: tuple[np.ndarray, np.ndarray], ticks: list[int]) -> None:
    times, _ = data
    query = times[0] + np.array(ticks, dtype=np.int64)
    for tick, age in zip(query, age_at(times, query), strict=True):
        before = times[times <= tick]
        assert age == (tick - before[-1] if len(before) else np.iinfo(np.int64).max)


def test_resample_dispatches_by_rule_name() -> None:
    times = np.array([0, 10], dtype=np.int64)
    values = np.array([[0.0], [1.0]])
    ticks = np.array([5], dtype=np.int64)
    assert resample("linear", times, values, ticks, 1)[0, 0] == 0.5
    assert resample("zero_order_hold", times, values, ticks, 1)[0, 0] == 0.0
    assert resample("last_value", times, values, ticks, 10)[0, 0] == 1.0


@settings(max_examples=200)
@given(
    tick0=st.integers(0, 10**15),
    latencies=st.lists(st.integers(0, 4_999_999), min_size=1, max_size=60),
    floor=st.integers(0, 5_000_000),
    marker_latency=st.integers(0, 5_000_000),
)
def test_anchored_ticks_put_every_command_in_its_own_period(
    tick0: int, latencies: list[int], floor: int, marker_latency: int
) -> None:
    """Commands logged at t_k + d_k (spread < T/4): whatever the marker's latency, command k is in [τ_k, τ_k + T)."""
    period = 20_000_000
    commands = tick0 + period * np.arange(len(latencies), dtype=np.int64) + floor + np.array(latencies, dtype=np.int64)
    start = anchor_ticks(tick0 + marker_latency, commands, period)
    ticks = start + period * np.arange(len(latencies), dtype=np.int64)
    assert ((commands >= ticks) & (commands < ticks + period)).all()
    assert tick0 <= start <= tick0 + min(marker_latency, floor + min(latencies))


def test_real_data_covers_interpolated_and_fresh_ticks_only() -> None:
    times = np.array([0, 10, 20, 200, 210], dtype=np.int64)
    ticks = np.array([-1, 0, 15, 25, 31, 100, 205, 215, 221], dtype=np.int64)
    covered = real_data_at(times, ticks, max_gap_ns=50, horizon_ns=10)
    assert covered.tolist() == [False, True, True, True, False, False, True, True, False]
