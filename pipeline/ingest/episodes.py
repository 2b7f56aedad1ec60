"""From a bag's signals to RL episodes: segmentation, resampling to control ticks, reward rules.

Segmentation (``episodes.segment_by``): by ``markers``, episodes run from a ``start`` marker to
the next ``end`` marker (a second ``start`` or the end of the bag closes an open episode as
truncated), and without markers every goal message (a goal being set) starts an episode, which
spans the commands sent until the next one; by ``file``, a bag is one episode (its first command
to its last); by ``gaps``, every command silence longer than ``max_gap_s`` ends one; by ``idle``,
a stretch of at least ``idle_s`` with an unchanged command ends one and the next change starts
the next (teleoperation: the operator lets go).

Step k of an episode is control tick ``t_k = t_0 + k·T``: the observation is every
observation field resampled at ``t_k``, the action is the command for the period ``[t_k, t_k+T)``
(``last_value``) and the reward of step k is computed on the observation at ``t_{k+1}``, i.e. on
the state after the action (s, a, s′).

The tick grid is recovered from the command stream, not from the start marker's log time (see
:func:`anchor_ticks`): a logger stamps every message some latency after the event, the marker
included, so a grid started at a late marker puts commands logged with less latency than the
marker into the previous period. An episode is cut, and marked truncated, at the first tick
where a required field has no real data (inside a gap longer than ``max_gap_s``, or more than
half a control period past the field's last sample: never extrapolated), after the last period
with a fresh command, at an e-stop, and at the time limit; it terminates at the first tick the
reach rule fires.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.ingest.bag import BagSignals, IngestError, Signal
from pipeline.ingest.config import EndMarkerSuccess, IngestConfig, NoReward, ReachReward, TopicSuccess
from pipeline.ingest.resample import age_at, last_value, real_data_at, resample, zero_order_hold
from sim.contexts import wrap_angle
from sim.robot import RobotDescription
from sim.robots.profile import Robot


@dataclass(frozen=True)
class ActionSpec:
    """What the eval env expects of actions: their bounds and, for discrete envs, the torque table."""

    low: NDArray[np.float64]  # lower bound per component, in the action's unit (torque, velocity or position)
    high: NDArray[np.float64]
    table: NDArray[np.float64] | None  # (n_actions, 2) torques, or None for continuous actions


def in_robot_order(
    config: IngestConfig, fields: dict[str, NDArray[np.float64]], name: str, robot: RobotDescription | Robot
) -> NDArray[np.float64]:
    """A joint field's columns reordered from the mapping's joint order to the robot's (for its kinematics)."""
    names = config.observations[name].component_names
    return fields[name][:, [names.index(joint) for joint in robot.joint_names]]


def twist_to_joint_velocity(
    config: IngestConfig, fields: dict[str, NDArray[np.float64]], robot: Robot, twists: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Joint velocity targets from end-effector twists, by damped least squares (see :class:`TwistToJointVelocity`).

    Args:
        config: The mapping, with ``twist`` set (its action ``components`` name the twist's Jacobian rows).
        fields: The observation fields resampled at the ticks (one row per tick: one more than twists).
        robot: The robot profile (its kinematics and joint order).
        twists: The twist per control period, shape ``(steps, len(components))``.

    Returns:
        Joint velocity targets q̇_k = Jᵀ(JJᵀ + λ²I)⁻¹v_k at each period's first tick, shape ``(steps, joints)``.
    """
    assert config.twist is not None
    twist = config.twist
    positions = in_robot_order(config, fields, twist.joint_field, robot)
    rows = config.twist_rows
    link = twist.link or robot.profile.task.end_effector
    damping = twist.damping**2 * np.eye(len(rows))
    velocities = np.empty((len(twists), len(robot.joint_names)))
    for k, twist_k in enumerate(twists):
        _, jacobian = robot.kinematics.jacobian(link, positions[k], angular=True)
        rows_k = jacobian[rows]
        velocities[k] = rows_k.T @ np.linalg.solve(rows_k @ rows_k.T + damping, twist_k)
    return velocities


@dataclass(frozen=True)
class Segment:
    """A time span of the log that is one episode."""

    start_ns: int
    end_ns: int
    controller: str | None
    open_ended: bool  # closed by a new start or the end of the bag rather than an end marker
    outcome: str | None = None  # the end marker's `reason`, if it gave one


@dataclass
class Episode:
    """One ingested episode, ready for Minari."""

    observations: NDArray[np.float32]
    actions: NDArray[np.float32] | NDArray[np.int64]
    rewards: NDArray[np.float64]
    terminations: NDArray[np.bool_]
    truncations: NDArray[np.bool_]
    source_bag: str
    start_ns: int
    end_ns: int
    controller: str | None
    end_reason: str
    actions_held: int
    actions_clipped: int
    actions_snapped: int


@dataclass(frozen=True)
class DroppedEpisode:
    """An episode that could not be used, and why."""

    start_ns: int
    reason: str


def _command_runs(times: NDArray[np.int64], keep: NDArray[np.bool_], period_ns: int) -> list[Segment]:
    """Spans of consecutive kept commands, each from its first command to one period after its last."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
    return [
        Segment(int(times[begin]), int(times[stop - 1]) + period_ns, None, open_ended=True)
        for begin, stop in zip(edges[::2], edges[1::2], strict=True)
    ]


def _idle(command: Signal, idle_ns: int) -> NDArray[np.bool_]:
    """Commands inside a stretch of at least ``idle_ns`` over which the command did not change."""
    changed = np.ones(len(command.times), dtype=bool)
    changed[1:] = np.any(command.values[1:] != command.values[:-1], axis=1)
    starts = np.flatnonzero(changed)
    stops = np.append(starts[1:], len(command.times))
    idle = np.zeros(len(command.times), dtype=bool)
    for begin, stop in zip(starts, stops, strict=True):
        if command.times[stop - 1] - command.times[begin] >= idle_ns:
            idle[begin:stop] = True
    return idle


def segment(signals: BagSignals, config: IngestConfig) -> list[Segment]:
    """Cut a bag's timeline into episode spans by the configured rule (``episodes.segment_by``)."""
    rules = config.episodes
    period_ns = round(1e9 / config.control_hz)
    command = signals.fields[config.action_name]
    if rules.segment_by == "file":
        return [Segment(int(command.times[0]), int(command.times[-1]) + period_ns, None, open_ended=True)]
    if rules.segment_by == "gaps":
        split = np.flatnonzero(np.diff(command.times) > round(rules.max_gap_s * 1e9))
        runs = zip(np.concatenate([[0], split + 1]), np.append(split, len(command.times) - 1), strict=True)
        return [
            Segment(int(command.times[a]), int(command.times[b]) + period_ns, None, open_ended=True) for a, b in runs
        ]
    if rules.segment_by == "idle":
        return _command_runs(command.times, ~_idle(command, round(rules.idle_s * 1e9)), period_ns)
    if signals.markers:
        segments: list[Segment] = []
        open_start: tuple[int, str | None] | None = None
        for time_ns, payload in sorted(signals.markers, key=lambda item: item[0]):
            if payload["event"] == "start":
                if open_start is not None:
                    segments.append(Segment(open_start[0], time_ns, open_start[1], open_ended=True))
                open_start = (time_ns, payload.get("controller"))
            elif open_start is not None:
                reason = payload.get("reason")
                outcome = reason if isinstance(reason, str) else None
                segments.append(Segment(open_start[0], time_ns, open_start[1], open_ended=False, outcome=outcome))
                open_start = None
        if open_start is not None:
            segments.append(Segment(open_start[0], signals.end_ns, open_start[1], open_ended=True))
        return segments
    # A latched goal is published when the goal is set, so every message starts an episode (even the same goal).
    if config.episodes.goal_field not in signals.fields:
        raise IngestError(
            signals.path.name,
            f"no episode markers on {config.episodes.marker_topic} and the goal {config.episodes.goal_field!r} is "
            "not logged: set episodes.segment_by to file, gaps or idle",
        )
    goal = signals.fields[config.episodes.goal_field]
    commands = command.times
    bounds = [*goal.times.tolist(), signals.end_ns + 1]
    segments = []
    for begin, stop in itertools.pairwise(bounds):
        inside = commands[(commands >= begin) & (commands < stop)]
        if len(inside):
            segments.append(Segment(int(inside[0]), int(inside[-1]) + period_ns, None, open_ended=True))
    return segments


def anchor_ticks(start_ns: int, command_times: NDArray[np.int64], period_ns: int) -> int:
    """The first control tick of an episode whose start marker was logged at ``start_ns``.

    Commands are logged at ``t_k + d_k``: their tick plus a latency ``d_k >= 0`` that varies from
    message to message. Their phase modulo the period ``T`` is therefore the tick phase plus
    latency, and its lower envelope (the least latency seen) is the tick phase plus the smallest
    latency. Phases are taken relative to their median; those more than ``T/4`` below it are
    commands delayed by over ``T/2`` into the next period (hiccups), not ticks, and are left out.
    The grid is that envelope; its first tick is the first one at or after ``start_ns - T/2``. A
    start marker logged earlier than that tick (by less than ``T/2``) is earlier evidence of the
    same tick and is used instead.

    With a command latency spread below ``T/4`` (5 ms at 50 Hz) every command then lands in its
    own period ``[t_k, t_k + T)`` whatever the marker's own latency: the marker only picks which
    tick is first, and a marker latency of 0–5 ms (under ``T/2``) picks the right one. States are
    read at most the smallest command latency after the true tick (0.5 ms for a typical logger).

    Args:
        start_ns: Log time of the episode's start marker (or of its first command).
        command_times: Times of the action field's samples in and around the episode.
        period_ns: The control period ``T``.

    Returns:
        Time of tick 0 in ns.
    """
    half = period_ns // 2
    nearby = command_times[command_times >= start_ns - half]
    if len(nearby) == 0:
        return start_ns
    phase = (nearby - nearby[0] + half) % period_ns - half  # in [-T/2, T/2) around the first command
    usual = int(np.median(phase))
    offset = (phase - usual + half) % period_ns - half  # around the median phase
    envelope = int(nearby[0]) + usual + int(offset[offset >= -(period_ns // 4)].min())
    first = envelope + period_ns * -((envelope - (start_ns - half)) // period_ns)  # first tick >= start - T/2
    return start_ns if first - half < start_ns < first else first


def _first_false(valid: NDArray[np.bool_]) -> int:
    """Index of the first False, or len(valid) when all are True."""
    bad = np.flatnonzero(~valid)
    return int(bad[0]) if len(bad) else len(valid)


def _window(signal: Signal, start_ns: int, end_ns: int) -> Signal:
    keep = (signal.times >= start_ns) & (signal.times <= end_ns)
    return Signal(signal.times[keep], signal.values[keep])


def _until_gap(signal: Signal, tick_ns: int, max_gap_ns: int) -> Signal:
    """The samples up to the first silence longer than ``max_gap_ns`` that begins at or after ``tick_ns``'s sample.

    A tick just before a gap is read from the samples before it, never interpolated across the gap.
    """
    first = max(int(np.searchsorted(signal.times, tick_ns, side="right")) - 1, 0)
    gaps = np.flatnonzero(np.diff(signal.times[first:]) > max_gap_ns)
    stop = first + int(gaps[0]) + 1 if len(gaps) else len(signal.times)
    return Signal(signal.times[:stop], signal.values[:stop])


@dataclass(frozen=True)
class RewardInputs:
    """What a reward rule sees of one episode: its fields at ticks ``t_0 … t_N`` and its span."""

    fields: dict[str, NDArray[np.float64]]  # observation fields resampled at the ticks, (N + 1, d)
    ticks: NDArray[np.int64]
    span: Segment
    end_reason: str  # how the episode ended before the rule (end_marker, gap, ...)
    signals: BagSignals
    robot: RobotDescription | Robot  # the built-in reacher, or a robot profile checked against its URDF


def _reach(rule: ReachReward, inputs: RewardInputs) -> NDArray[np.bool_]:
    """Forward kinematics of the joint angles at t_{k+1} within ``radius`` of the goal there."""
    joints = inputs.fields[rule.joint_field][1:]
    _, hand = inputs.robot.forward_kinematics(joints)
    reached: NDArray[np.bool_] = np.linalg.norm(hand - inputs.fields[rule.goal_field][1:], axis=1) <= rule.radius
    return reached


def _no_reward(rule: NoReward, inputs: RewardInputs) -> NDArray[np.bool_]:
    return np.zeros(len(inputs.ticks) - 1, dtype=bool)


def _success_topic(rule: TopicSuccess, inputs: RewardInputs) -> NDArray[np.bool_]:
    """Step k succeeds when a success message arrives in ``(t_k, t_{k+1}]`` (its s′ is the first tick after it)."""
    events = np.array(inputs.signals.successes, dtype=np.int64)
    ticks = inputs.ticks
    counts = np.searchsorted(events, ticks[1:], side="right") - np.searchsorted(events, ticks[:-1], side="right")
    success: NDArray[np.bool_] = counts > 0
    return success


def _end_marker(rule: EndMarkerSuccess, inputs: RewardInputs) -> NDArray[np.bool_]:
    """The last step succeeds when the episode ran to its end marker and the marker's reason is a success."""
    success = np.zeros(len(inputs.ticks) - 1, dtype=bool)
    success[-1] = inputs.end_reason == "end_marker" and inputs.span.outcome in rule.success_reasons
    return success


# Each reward rule by kind: success[k] for step k, judged on s′ (tick k+1). A rule from a robot profile
# (e.g. reach for any link via the profile's forward kinematics) is one more entry.
REWARD_RULES: dict[str, Callable[[Any, RewardInputs], NDArray[np.bool_]]] = {
    "reach": _reach,
    "none": _no_reward,
    "success_topic": _success_topic,
    "end_marker": _end_marker,
}


def build_episode(
    span: Segment, signals: BagSignals, config: IngestConfig, robot: RobotDescription | Robot, action_spec: ActionSpec
) -> Episode | DroppedEpisode:
    """Resample one segment to control ticks and apply the reward, termination and truncation rules."""
    rules = config.episodes
    period_ns = round(1e9 / config.control_hz)
    max_gap_ns = round(rules.max_gap_s * 1e9)
    if span.end_ns - span.start_ns < period_ns:
        return DroppedEpisode(span.start_ns, "shorter than one control tick")
    commands = signals.fields[config.action_name].times
    span = dataclasses.replace(span, start_ns=anchor_ticks(span.start_ns, commands[commands <= span.end_ns], period_ns))
    steps = (span.end_ns - span.start_ns + period_ns // 2) // period_ns  # the tick nearest the (late-logged) end
    ticks = span.start_ns + period_ns * np.arange(steps + 1, dtype=np.int64)
    # Samples of this episode only: never interpolate into the next one (latched fields keep their last value).
    mappings = {**config.observations, **config.action}
    window = {
        name: _window(signals.fields[name], -1 if mappings[name].latched else span.start_ns - max_gap_ns, span.end_ns)
        for name in mappings
    }
    for name, signal in window.items():
        if len(signal.times) == 0:
            return DroppedEpisode(span.start_ns, f"no {name} samples during the episode")

    # Truncate at the first tick without real data on a state field (inside a gap, or past its last sample), and
    # after the last period with a fresh command before a command gap: nothing is extrapolated or held at the end.
    obs_ok = np.ones(steps + 1, dtype=bool)
    for name, mapping in config.observations.items():
        if not mapping.latched:
            obs_ok &= real_data_at(window[name].times, ticks, max_gap_ns, period_ns // 2)
    action_ok = age_at(window[config.action_name].times, ticks[:-1] + period_ns - 1) <= max_gap_ns
    last_obs = _first_false(obs_ok) - 1
    last_step = min(last_obs, _first_false(action_ok))
    end_reason = "gap" if last_step < steps else ("end_marker" if not span.open_ended else "open_ended")
    fresh = age_at(window[config.action_name].times, ticks[:last_step] + period_ns - 1) < period_ns
    last_step -= _first_false(~fresh[::-1])  # periods at the end without a fresh command
    for time_ns, pressed in signals.estops:
        if pressed and span.start_ns <= time_ns < span.start_ns + last_step * period_ns:
            last_step, end_reason = (time_ns - span.start_ns) // period_ns, "estop"
            break
    if last_step > rules.time_limit_steps:
        last_step, end_reason = rules.time_limit_steps, "time_limit"
    if last_step < 1:
        return DroppedEpisode(span.start_ns, f"{end_reason} before the first full control step")
    ticks = ticks[: last_step + 1]

    fields = {}
    for name, mapping in config.observations.items():
        signal = window[name] if mapping.latched else _until_gap(window[name], int(ticks[-1]), max_gap_ns)
        values = signal.values
        wrap = [mapping.component_names.index(joint) for joint in mapping.wrap_joints]
        if wrap:  # interpolate continuous angles unwrapped, whatever the robot reported
            values = values.copy()
            values[:, wrap] = np.unwrap(values[:, wrap], axis=0)
        resampled = resample(mapping.resample, signal.times, values, ticks, period_ns)
        if wrap:
            resampled[:, wrap] = wrap_angle(resampled[:, wrap])
        fields[name] = resampled
    if config.hindsight_goal is not None:  # the goal is where the end effector ends: FK of the last tick's joints
        _, final = robot.forward_kinematics(
            in_robot_order(config, fields, config.hindsight_goal.joint_field, robot)[-1]
        )
        fields[config.hindsight_goal.field] = np.tile(final, (len(ticks), 1))
    observations = np.concatenate(list(fields.values()), axis=1).astype(np.float32)

    command = window[config.action_name]
    if config.action_mapping.resample == "zero_order_hold":  # the command active at the tick (a trajectory point)
        targets = zero_order_hold(command.times, command.values, ticks[:-1])
        held = age_at(command.times, ticks[:-1]) >= period_ns
    else:
        targets, held = last_value(command.times, command.values, ticks[:-1], period_ns)
    if config.twist is not None:  # an end-effector twist → joint velocity targets at the tick's joint positions
        if not isinstance(robot, Robot):
            raise TypeError("twist commands need a robot profile")
        targets = twist_to_joint_velocity(config, fields, robot, targets)
    clipped = (targets < action_spec.low) | (targets > action_spec.high)
    targets = np.clip(targets, action_spec.low, action_spec.high)

    # The reward rule on s′ (tick k+1); the robot's joints in its own order for forward kinematics.
    if isinstance(config.reward, ReachReward):
        fields[config.reward.joint_field] = in_robot_order(config, fields, config.reward.joint_field, robot)
    inputs = RewardInputs(fields, ticks, span, end_reason, signals, robot)
    reached = REWARD_RULES[config.reward.kind](config.reward, inputs)
    terminations = np.zeros(last_step, dtype=bool)
    if reached.any():
        first = int(np.flatnonzero(reached)[0])
        last_step, end_reason = first + 1, "reached" if config.reward.kind == "reach" else "success"
        terminations = np.zeros(last_step, dtype=bool)
        terminations[first] = True
        observations, targets, held, clipped = (
            observations[: last_step + 1],
            targets[:last_step],
            held[:last_step],
            clipped[:last_step],
        )
    rewards = terminations.astype(np.float64)
    truncations = np.zeros(last_step, dtype=bool)
    truncations[-1] = not terminations[-1]

    snapped = 0
    actions: NDArray[np.float32] | NDArray[np.int64] = targets.astype(np.float32)
    if action_spec.table is not None:
        distance = np.abs(targets[:, None, :] - action_spec.table[None, :, :]).max(axis=2)
        actions = distance.argmin(axis=1).astype(np.int64)
        snapped = int((distance.min(axis=1) > 1e-6).sum())
    return Episode(
        observations=observations,
        actions=actions,
        rewards=rewards,
        terminations=terminations,
        truncations=truncations,
        source_bag=signals.path.name,
        start_ns=span.start_ns,
        end_ns=int(ticks[last_step]),
        controller=span.controller,
        end_reason=end_reason,
        actions_held=int(held.sum()),
        actions_clipped=int(clipped.any(axis=1).sum()),
        actions_snapped=snapped,
    )
