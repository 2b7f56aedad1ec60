"""The policy server's safety logic, free of ROS so that every path is unit-tested on its own.

- :class:`Watchdog`: an input older than its max age raises a fault that stays latched until a
  message *newer than the fault* arrives.
- :class:`EStop`: latched by any ``True`` on the e-stop topic; only an explicit reset clears it.
- :func:`safe_action`: zero torque (or velocity), viscous damping ``τ = -k·q̇`` from a fresh velocity,
  or, for position-controlled arms, holding the last measured joint positions.
- :class:`ActionFilter`: clamps to the contract's torque limits and limits the change per tick.
- :class:`LowPass`: a first-order low-pass on the policy action, for an inner loop that runs faster
  than the policy.
- :class:`LoopMonitor`: inference latency percentiles, loop period jitter, overruns (late ticks) and
  skipped (missed) ticks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass
class Watchdog:
    """Maximum age of one input stream, with a latched fault.

    The watchdog measures its own reaction on the caller's clock: when a fault latches, ``trip_age_s``
    is the input's age at that check and ``trip_gap_s`` the time since the previous check. A watchdog
    checked once per control tick therefore trips on the first stale tick exactly when
    ``max_age_s < trip_age_s <= max_age_s + trip_gap_s``, however late the scheduler ran that tick.

    Attributes:
        name: The input (e.g. ``joint_states``), for diagnostics.
        max_age_s: Maximum age; 0 disables the age check (the input must still have arrived once).
        last_receipt_s: When the latest message arrived (None before the first).
        fault_since_s: When the latched fault was raised (None while fresh).
        last_check_s: When :meth:`check` last ran.
        trip_age_s: The input's age when the latest fault latched.
        trip_gap_s: The time between that check and the one before it.
    """

    name: str
    max_age_s: float
    last_receipt_s: float | None = None
    fault_since_s: float | None = None
    last_check_s: float | None = None
    trip_age_s: float | None = None
    trip_gap_s: float | None = None

    def feed(self, now_s: float) -> None:
        """A message arrived at ``now_s``; a latched fault clears only if it is newer than the fault."""
        self.last_receipt_s = now_s
        if self.fault_since_s is not None and now_s > self.fault_since_s:
            self.fault_since_s = None

    def age_s(self, now_s: float) -> float:
        """Seconds since the last message (inf before the first)."""
        return float("inf") if self.last_receipt_s is None else now_s - self.last_receipt_s

    def check(self, now_s: float) -> bool:
        """True when the input is fresh; a stale input latches the fault."""
        previous_check, self.last_check_s = self.last_check_s, now_s
        if self.fault_since_s is not None:
            return False
        stale = self.last_receipt_s is None or (self.max_age_s > 0 and self.age_s(now_s) > self.max_age_s)
        if stale and self.last_receipt_s is not None:
            self.fault_since_s = now_s
            self.trip_age_s = self.age_s(now_s)
            self.trip_gap_s = None if previous_check is None else now_s - previous_check
        return not stale

    @property
    def faulted(self) -> bool:
        """Whether the fault is latched."""
        return self.fault_since_s is not None


@dataclass
class EStop:
    """A latched emergency stop."""

    engaged: bool = False
    engagements: int = 0

    def signal(self, value: bool) -> None:
        """A message on the e-stop topic: ``True`` latches, ``False`` does nothing (only :meth:`reset` clears)."""
        if value and not self.engaged:
            self.engaged = True
            self.engagements += 1

    def reset(self) -> bool:
        """Clear the latch; returns whether it was engaged."""
        was, self.engaged = self.engaged, False
        return was


#: The safe-action modes, and the action interfaces each is safe for: a zero position target would
#: drive a position-controlled arm to its zero pose, and a held position means nothing as a torque.
SAFE_ACTIONS = {"zero": ("effort", "velocity"), "damping": ("effort", "velocity"), "hold": ("position",)}


def safe_action(
    mode: str,
    damping_gain: float,
    joints: int,
    velocity: NDArray[np.float64] | None,
    position: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """The command sent whenever the policy must not act.

    Args:
        mode: ``zero`` (no torque, or zero velocity), ``damping`` (``τ = -gain·q̇``) or ``hold`` (position
            targets: the last measured joint positions).
        damping_gain: N·m·s/rad.
        joints: Number of joints.
        velocity: The latest joint velocities, or None when they are not trustworthy (then zero torque).
        position: The last measured joint positions (``hold``); the node has them from configure on.

    Raises:
        ValueError: An unknown mode, or ``hold`` without a measured position.
    """
    if mode not in SAFE_ACTIONS:
        raise ValueError(f"safe_action mode must be one of {list(SAFE_ACTIONS)}, got {mode!r}")
    if mode == "hold":
        if position is None or not np.isfinite(position).all():
            raise ValueError("safe_action hold needs the last measured joint positions")
        return np.asarray(position, dtype=np.float64)
    if mode == "damping" and velocity is not None and np.isfinite(velocity).all():
        return np.asarray(-damping_gain * velocity, dtype=np.float64)
    return np.zeros(joints)


@dataclass
class ActionFilter:
    """Clamp torques to the limits and limit their change per control tick.

    Attributes:
        low: Lower limits, N·m.
        high: Upper limits, N·m.
        max_step: Largest change of any torque between consecutive commands, N·m (inf = no limit).
    """

    low: NDArray[np.float64]
    high: NDArray[np.float64]
    max_step: float = float("inf")
    previous: NDArray[np.float64] | None = None

    def __call__(self, torque: NDArray[np.float64]) -> NDArray[np.float64]:
        """The command to send for the policy's ``torque`` (which must be finite)."""
        command = np.clip(torque, self.low, self.high)
        if self.previous is not None and np.isfinite(self.max_step):
            command = np.clip(command, self.previous - self.max_step, self.previous + self.max_step)
        self.previous = command
        return command

    def hold(self, command: NDArray[np.float64]) -> None:
        """Record a command sent outside the filter (a safe action), so the next step limits from it."""
        self.previous = command


@dataclass
class LowPass:
    """First-order low-pass ``y_k = y_{k-1} + α (u_k - y_{k-1})``, ``α = 1 - exp(-2π f_c Δt)``.

    The discretisation of ``τ ẏ = u - y`` with ``τ = 1 / (2π f_c)`` for an input held over each tick
    (exact for a piecewise-constant input): a step reaches ``1 - 1/e`` (63 %) of its height after
    ``τ``. A cutoff of 0 passes the input through unchanged.

    Attributes:
        cutoff_hz: Cutoff frequency ``f_c``, Hz (0 = no filtering).
        period_s: Tick period ``Δt``, s.
        state: The last output (None before the first input, or after :meth:`reset` with None).
    """

    cutoff_hz: float
    period_s: float
    state: NDArray[np.float64] | None = None

    @property
    def alpha(self) -> float:
        """The weight of the new input per tick (1 = no filtering)."""
        return 1.0 if self.cutoff_hz <= 0 else float(1.0 - np.exp(-2.0 * np.pi * self.cutoff_hz * self.period_s))

    def __call__(self, value: NDArray[np.float64]) -> NDArray[np.float64]:
        """Filter one tick's input (finite); the first input passes through."""
        alpha = self.alpha
        self.state = value if self.state is None or alpha >= 1.0 else self.state + alpha * (value - self.state)
        return self.state

    def reset(self, value: NDArray[np.float64] | None) -> None:
        """Start again from ``value`` (a command sent outside the filter, e.g. the safe action)."""
        self.state = value


@dataclass
class LoopMonitor:
    """Rolling statistics of the control loop (the last 2000 ticks) for diagnostics.

    Attributes:
        period_s: Nominal control period.
    """

    period_s: float
    ticks: int = 0
    policy_ticks: int = 0
    overruns: int = 0
    skipped: int = 0
    inference_s: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    periods_s: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    last_tick_s: float | None = None

    def tick(self, start_s: float, busy_s: float) -> None:
        """Record one tick that started at ``start_s`` and spent ``busy_s`` in the callback.

        An overrun is a callback longer than the period, or a tick that came over 1.5 periods after the last.
        """
        self.ticks += 1
        late = False
        if self.last_tick_s is not None:
            gap = start_s - self.last_tick_s
            self.periods_s.append(gap)
            late = gap > 1.5 * self.period_s
        if late or busy_s > self.period_s:
            self.overruns += 1
        self.last_tick_s = start_s

    def skip(self, ticks: int) -> None:
        """Record ticks the loop dropped because it fell more than a period behind (missed ticks)."""
        self.skipped += ticks

    def inference(self, seconds: float) -> None:
        """Record one model call (a policy tick)."""
        self.policy_ticks += 1
        self.inference_s.append(seconds)

    def summary(self) -> dict[str, float]:
        """Inference p50/p99, median period, period jitter (std, max deviation), all µs; tick counts."""
        latency = np.asarray(self.inference_s) * 1e6
        periods = np.asarray(self.periods_s)
        deviation = np.abs(periods - self.period_s) * 1e6 if len(periods) else np.zeros(1)
        return {
            "inference_p50_us": float(np.percentile(latency, 50)) if len(latency) else float("nan"),
            "inference_p99_us": float(np.percentile(latency, 99)) if len(latency) else float("nan"),
            "period_p50_us": float(np.percentile(periods, 50) * 1e6) if len(periods) else float("nan"),
            "period_jitter_std_us": float(np.std(periods) * 1e6) if len(periods) else float("nan"),
            "period_jitter_max_us": float(deviation.max()),
            "ticks": float(self.ticks),
            "policy_ticks": float(self.policy_ticks),
            "overruns": float(self.overruns),
            "skipped_ticks": float(self.skipped),
        }
