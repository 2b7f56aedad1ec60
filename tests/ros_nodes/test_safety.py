"""The policy server's safety logic, path by path (no ROS needed, run with the node's tests)."""

# mypy narrows `watchdog.faulted` / `estop.engaged` across the method calls that change them.
# mypy: disable-error-code="unreachable"

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from symgate_ros.safety import ActionFilter, EStop, LoopMonitor, LowPass, Watchdog, safe_action


def test_watchdog_faults_on_stale_input_and_latches_until_a_newer_message() -> None:
    watchdog = Watchdog("joint_states", max_age_s=0.05)
    assert not watchdog.check(0.0) and not watchdog.faulted  # never received: not fresh, nothing to latch
    watchdog.feed(1.00)
    assert watchdog.check(1.04)
    assert not watchdog.check(1.06) and watchdog.faulted
    assert not watchdog.check(1.061)  # latched
    watchdog.feed(1.06)  # a message stamped at the fault time does not clear it
    assert watchdog.faulted
    watchdog.feed(1.07)
    assert not watchdog.faulted and watchdog.check(1.08)


def test_watchdog_measures_its_trip() -> None:
    watchdog = Watchdog("joint_states", max_age_s=0.05)
    watchdog.feed(1.00)
    assert watchdog.check(1.04) and watchdog.trip_age_s is None
    assert not watchdog.check(1.07)
    assert watchdog.trip_age_s == pytest.approx(0.07) and watchdog.trip_gap_s == pytest.approx(0.03)
    assert not watchdog.check(1.09)  # latched: the measurement is that of the tripping check
    assert watchdog.trip_age_s == pytest.approx(0.07)


@given(
    max_age=st.floats(0.001, 0.5),
    receipt=st.floats(0.0, 1.0),
    gaps=st.lists(st.floats(0.0001, 0.2), min_size=1, max_size=200),
)
def test_watchdog_trips_on_the_first_stale_check_whatever_the_schedule(
    max_age: float, receipt: float, gaps: list[float]
) -> None:
    watchdog = Watchdog("joint_states", max_age_s=max_age)
    watchdog.feed(receipt)
    assert watchdog.check(receipt)
    now = receipt
    for gap in gaps:
        now += gap
        fresh = watchdog.check(now)
        assert fresh == (watchdog.trip_age_s is None)
        if not fresh:
            assert watchdog.trip_age_s is not None and watchdog.trip_gap_s is not None
            assert max_age < watchdog.trip_age_s <= max_age + watchdog.trip_gap_s + 1e-12
            break


def test_watchdog_without_age_limit_only_requires_one_message() -> None:
    watchdog = Watchdog("goal", max_age_s=0.0)
    assert not watchdog.check(5.0)
    watchdog.feed(5.0)
    assert watchdog.check(1e6)


def test_estop_latches_and_only_reset_clears_it() -> None:
    estop = EStop()
    estop.signal(False)
    assert not estop.engaged
    estop.signal(True)
    estop.signal(False)
    assert estop.engaged and estop.engagements == 1
    assert estop.reset() and not estop.engaged and not estop.reset()


def test_safe_action_modes() -> None:
    velocity = np.array([1.0, -2.0])
    assert safe_action("zero", 0.5, 2, velocity).tolist() == [0.0, 0.0]
    assert safe_action("damping", 0.5, 2, velocity).tolist() == [-0.5, 1.0]
    assert safe_action("damping", 0.5, 2, None).tolist() == [0.0, 0.0]
    assert safe_action("damping", 0.5, 2, np.array([np.nan, 1.0])).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"one of \['zero', 'damping', 'hold'\]"):
        safe_action("brake", 0.5, 2, velocity)


def test_hold_keeps_a_position_controlled_arm_where_it_was_measured() -> None:
    position = np.array([0.3, -1.2])
    assert safe_action("hold", 0.5, 2, np.array([1.0, 1.0]), position).tolist() == [0.3, -1.2]
    for unknown in (None, np.array([np.nan, 0.0])):
        with pytest.raises(ValueError, match="hold needs the last measured joint positions"):
            safe_action("hold", 0.5, 2, None, unknown)


@given(st.lists(st.tuples(st.floats(-10, 10), st.floats(-10, 10)), min_size=1, max_size=30), st.floats(0.01, 3.0))
def test_action_filter_stays_within_limits_and_rate(torques: list[tuple[float, float]], step: float) -> None:
    limit = np.array([2.0, 2.0])
    action_filter = ActionFilter(-limit, limit, step)
    previous = None
    for torque in torques:
        command = action_filter(np.asarray(torque))
        assert np.all(np.abs(command) <= limit)
        if previous is not None:
            assert np.all(np.abs(command - previous) <= step + 1e-12)
        previous = command


def test_action_filter_limits_from_a_held_safe_action() -> None:
    action_filter = ActionFilter(np.array([-2.0]), np.array([2.0]), 0.5)
    action_filter.hold(np.array([0.0]))
    assert action_filter(np.array([2.0])).tolist() == [0.5]


@given(st.floats(0.5, 200.0), st.integers(1, 50))
def test_low_pass_step_response_is_the_continuous_one(cutoff_hz: float, ticks: int) -> None:
    """A held step: after n ticks of Δt, 1 - exp(-2π f_c n Δt) of the way (63 % after one time constant)."""
    period_s = 0.002
    low_pass = LowPass(cutoff_hz, period_s)
    low_pass.reset(np.zeros(2))
    for _ in range(ticks):
        out = low_pass(np.array([1.0, -2.0]))
    expected = 1.0 - np.exp(-2.0 * np.pi * cutoff_hz * ticks * period_s)
    np.testing.assert_allclose(out, [expected, -2.0 * expected], rtol=1e-9, atol=1e-12)


def test_low_pass_passes_the_first_input_and_a_zero_cutoff_through() -> None:
    low_pass = LowPass(10.0, 0.002)
    assert low_pass(np.array([3.0])).tolist() == [3.0]  # no state yet: nothing to smooth from
    assert 0.0 < low_pass(np.array([0.0]))[0] < 3.0
    unfiltered = LowPass(0.0, 0.002)
    unfiltered.reset(np.array([5.0]))
    assert unfiltered.alpha == 1.0 and unfiltered(np.array([1.0])).tolist() == [1.0]


def test_loop_monitor_counts_overruns_and_reports_percentiles() -> None:
    monitor = LoopMonitor(period_s=0.02)
    for k, busy in enumerate([0.001, 0.001, 0.03, 0.001]):  # the third tick runs longer than a period
        monitor.tick(0.02 * k, busy)
    monitor.tick(0.02 * 3 + 0.05, 0.001)  # a gap of 2.5 periods
    for seconds in (50e-6, 60e-6, 70e-6):
        monitor.inference(seconds)
    monitor.skip(3)
    summary = monitor.summary()
    assert monitor.overruns == 2 and summary["ticks"] == 5.0 and summary["skipped_ticks"] == 3.0
    assert summary["policy_ticks"] == 3.0  # one per model call
    assert summary["inference_p50_us"] == pytest.approx(60.0)
    assert summary["period_jitter_max_us"] == pytest.approx(30_000.0)  # a 50 ms gap is 30 ms off the 20 ms period
