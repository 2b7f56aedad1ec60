"""From a bag's signals to RL episodes: segmentation, resampling to control ticks, reward rules.

Segmentation: episodes run from a ``start`` marker to the next ``end`` marker (a second
``start`` or the end of the bag closes an open episode as truncated). Without markers, every goal
message (a goal being set) starts an episode, which spans the commands sent until the next one.

Step k of an episode is control tick ``t_k = t_start + k·T``: the observation is every
observation field resampled at ``t_k``, the action is the command for the period ``[t_k, t_k+T)``
(``last_value``) and the reward of step k is computed on the observation at ``t_{k+1}``, i.e. on
the state after the action (s, a, s′). An episode is cut, and marked truncated, at the first
tick where a required field is older than ``max_gap_s`` (never merged across a gap), at an
e-stop, and at the time limit; it terminates at the first tick the reach rule fires.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.ingest.bag import BagSignals, Signal
from pipeline.ingest.config import IngestConfig
from pipeline.ingest.resample import age_at, last_value, resample
from sim.contexts import wrap_angle
from sim.robot import RobotDescription
from sim.robots.profile import Robot


@dataclass(frozen=True)
class ActionSpec:
    """What the eval env expects of actions: torque limits and, for discrete envs, the torque table."""

    tau_max: NDArray[np.float64]
    table: NDArray[np.float64] | None  # (n_actions, 2) torques, or None for continuous actions


@dataclass(frozen=True)
class Segment:
    """A time span of the log that is one episode."""

    start_ns: int
    end_ns: int
    controller: str | None
    open_ended: bool  # closed by a new start or the end of the bag rather than an end marker


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


def segment(signals: BagSignals, config: IngestConfig) -> list[Segment]:
    """Cut a bag's timeline into episode spans (markers, or goal changes as the fall-back)."""
    if signals.markers:
        segments: list[Segment] = []
        open_start: tuple[int, str | None] | None = None
        for time_ns, payload in sorted(signals.markers, key=lambda item: item[0]):
            if payload["event"] == "start":
                if open_start is not None:
                    segments.append(Segment(open_start[0], time_ns, open_start[1], open_ended=True))
                open_start = (time_ns, payload.get("controller"))
            elif open_start is not None:
                segments.append(Segment(open_start[0], time_ns, open_start[1], open_ended=False))
                open_start = None
        if open_start is not None:
            segments.append(Segment(open_start[0], signals.end_ns, open_start[1], open_ended=True))
        return segments
    # A latched goal is published when the goal is set, so every message starts an episode (even the same goal).
    goal = signals.fields[config.episodes.goal_field]
    commands = signals.fields[config.action_name].times
    bounds = [*goal.times.tolist(), signals.end_ns + 1]
    period_ns = round(1e9 / config.control_hz)
    segments = []
    for begin, stop in itertools.pairwise(bounds):
        inside = commands[(commands >= begin) & (commands < stop)]
        if len(inside):
            segments.append(Segment(int(inside[0]), int(inside[-1]) + period_ns, None, open_ended=True))
    return segments


def _first_false(valid: NDArray[np.bool_]) -> int:
    """Index of the first False, or len(valid) when all are True."""
    bad = np.flatnonzero(~valid)
    return int(bad[0]) if len(bad) else len(valid)


def _window(signal: Signal, start_ns: int, end_ns: int) -> Signal:
    keep = (signal.times >= start_ns) & (signal.times <= end_ns)
    return Signal(signal.times[keep], signal.values[keep])


def build_episode(
    span: Segment, signals: BagSignals, config: IngestConfig, robot: RobotDescription | Robot, action_spec: ActionSpec
) -> Episode | DroppedEpisode:
    """Resample one segment to control ticks and apply the reward, termination and truncation rules."""
    rules = config.episodes
    period_ns = round(1e9 / config.control_hz)
    max_gap_ns = round(rules.max_gap_s * 1e9)
    steps = (span.end_ns - span.start_ns) // period_ns
    if steps < 1:
        return DroppedEpisode(span.start_ns, "shorter than one control tick")
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

    # Truncate at the first gap: an observation older than max_gap at a tick, or no fresh command in a period.
    obs_ok = np.ones(steps + 1, dtype=bool)
    for name, mapping in config.observations.items():
        max_age = np.iinfo(np.int64).max - 1 if mapping.latched else max_gap_ns
        obs_ok &= age_at(window[name].times, ticks) <= max_age
    action_ok = age_at(window[config.action_name].times, ticks[:-1] + period_ns - 1) <= max_gap_ns
    last_obs = _first_false(obs_ok) - 1
    last_step = min(last_obs, _first_false(action_ok))
    end_reason = "gap" if last_step < steps else ("end_marker" if not span.open_ended else "open_ended")
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
        signal = window[name]
        values = signal.values
        wrap = [mapping.component_names.index(joint) for joint in mapping.wrap_joints]
        if wrap:  # interpolate continuous angles unwrapped, whatever the robot reported
            values = values.copy()
            values[:, wrap] = np.unwrap(values[:, wrap], axis=0)
        resampled = resample(mapping.resample, signal.times, values, ticks, period_ns)
        if wrap:
            resampled[:, wrap] = wrap_angle(resampled[:, wrap])
        fields[name] = resampled
    observations = np.concatenate(list(fields.values()), axis=1).astype(np.float32)

    command = window[config.action_name]
    torques, held = last_value(command.times, command.values, ticks[:-1], period_ns)
    clipped = np.abs(torques) > action_spec.tau_max
    torques = np.clip(torques, -action_spec.tau_max, action_spec.tau_max)

    # Reach rule on s′: forward kinematics of the joint angles at t_{k+1} against the goal there.
    joint_mapping = config.observations[config.reward.joint_field]
    order = [joint_mapping.component_names.index(joint) for joint in robot.joint_names]
    _, hand = robot.forward_kinematics(fields[config.reward.joint_field][1:, order])
    reached = np.linalg.norm(hand - fields[config.reward.goal_field][1:], axis=1) <= config.reward.radius
    terminations = np.zeros(last_step, dtype=bool)
    if reached.any():
        first = int(np.flatnonzero(reached)[0])
        last_step, end_reason = first + 1, "reached"
        terminations = np.zeros(last_step, dtype=bool)
        terminations[first] = True
        observations, torques, held, clipped = (
            observations[: last_step + 1],
            torques[:last_step],
            held[:last_step],
            clipped[:last_step],
        )
    rewards = terminations.astype(np.float64)
    truncations = np.zeros(last_step, dtype=bool)
    truncations[-1] = not terminations[-1]

    snapped = 0
    actions: NDArray[np.float32] | NDArray[np.int64] = torques.astype(np.float32)
    if action_spec.table is not None:
        distance = np.abs(torques[:, None, :] - action_spec.table[None, :, :]).max(axis=2)
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
