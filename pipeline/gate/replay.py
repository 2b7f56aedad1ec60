"""Replay chosen gate episodes exactly, to watch them (clips) and open them in robotics tools (MCAP).

The gate's numbers come from its evaluated rollouts, and nothing here touches them. To show an
episode, the task it ran in (the same lock-step batch of envs, seeds and contexts, hence the same
batched ONNX calls) runs again in this process after the evaluation, and the chosen episodes are
observed after every control step: the raw joint state, the policy's command, every link frame
as PyBullet has it and, for clips, a camera frame. Each replay is compared with its evaluated
record (steps and success): :attr:`EpisodeTrace.reproduced` says whether it is the same episode.

Which episodes (:func:`choose_episodes`), per suite: the worst contexts (lowest success, at most
``worst``), one typical passing context (the median time to goal among always-solved contexts)
and, for a suite on the training contexts, those. A context's episode is its first failing one,
else its median-length one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from pipeline.gate.report import SuiteResult
from pipeline.gate.runner import EpisodeRecord, Task
from sim.robots.interface import SimulatedArm
from sim.rollout import BatchPolicy, run_lockstep

#: A camera: the scene → an ``(H, W, 3)`` RGB image.
Capture = Callable[["ArmScene"], NDArray[np.uint8]]


@dataclass(frozen=True)
class Choice:
    """One episode to replay, and why it was chosen (e.g. ``("worst",)``, ``("typical pass",)``)."""

    suite: str
    context_index: int
    episode: int
    why: tuple[str, ...]


@dataclass(frozen=True)
class Arm:
    """The arm of an episode, as the camera and the recorder need it.

    Attributes:
        urdf_path: The arm's URDF.
        base_link: The link every position is expressed in (the world frame: the base is fixed at the origin).
        joint_names: The controlled joints, action order.
        held_joints: Positions of the other movable joints.
        links: PyBullet's links in index order (link i is joint i's child).
        end_effector: Index of the end effector in ``links``.
        goal: The goal position, base frame, m.
        success_radius: The goal's radius, m.
    """

    urdf_path: Path
    base_link: str
    joint_names: tuple[str, ...]
    held_joints: Mapping[str, float]
    links: tuple[str, ...]
    end_effector: int
    goal: NDArray[np.float64]
    success_radius: float


@dataclass(frozen=True)
class ArmScene:
    """A reset reach env's simulator and its arm."""

    bullet: Any
    body: int
    arm: Arm

    def link_poses(self) -> NDArray[np.float64]:
        """Every link frame (URDF frame, not centre of mass) as ``(links, 7)``: x, y, z, qx, qy, qz, qw."""
        count = len(self.arm.links)
        states = [self.bullet.getLinkState(self.body, i, computeForwardKinematics=True) for i in range(count)]
        return np.array([[*state[4], *state[5]] for state in states], dtype=np.float64)


def arm_scene(env: gym.Env[Any, Any]) -> ArmScene:
    """The scene of a reset symgate reach env (any :class:`~sim.robots.interface.SimulatedArm`)."""
    facts = _arm(env).scene()
    bullet, body = facts.bullet, facts.body
    links = tuple(bullet.getJointInfo(body, i)[12].decode() for i in range(bullet.getNumJoints(body)))
    arm = Arm(
        facts.urdf_path, facts.base_link, facts.joint_names, dict(facts.held_joints), links,
        links.index(facts.end_effector_link), facts.goal.copy(), facts.success_radius,
    )  # fmt: skip
    return ArmScene(bullet, body, arm)


def commanded(env: gym.Env[Any, Any], action: NDArray[Any]) -> NDArray[np.float64]:
    """The joint targets or torques an action commands, clipped as applied (a discrete index: its torques)."""
    return _arm(env).command(action)


def _arm(env: gym.Env[Any, Any]) -> SimulatedArm:
    unwrapped = env.unwrapped
    if not isinstance(unwrapped, SimulatedArm):
        raise TypeError(f"{env}: not a symgate reach env")
    return unwrapped


@dataclass
class EpisodeTrace:
    """One replayed episode, observed after its reset and after each control step.

    Attributes:
        choice: Which episode and why.
        evaluated: The gate's record of it.
        context_rad: Its context angle, rad.
        control_hz: The control rate (step k is at k / control_hz s).
        arm: The arm, its URDF, links and goal (set at the reset).
        joint_position: Raw joint positions (no noise, not wrapped), one per step from the reset: ``steps + 1``.
        joint_velocity: Joint velocities, likewise.
        command: The policy's commands (clipped to the limits, a discrete index as its torques), ``steps``.
        link_poses: PyBullet's link frames ``(links, 7)`` per step, ``steps + 1``.
        frames: ``(step, image)`` camera frames, when a camera was given.
        replayed: The record of the replay (None until it finished).
    """

    choice: Choice
    evaluated: EpisodeRecord
    context_rad: float
    control_hz: float
    arm: Arm | None = None
    joint_position: list[NDArray[np.float64]] = field(default_factory=list)
    joint_velocity: list[NDArray[np.float64]] = field(default_factory=list)
    command: list[NDArray[np.float64]] = field(default_factory=list)
    link_poses: list[NDArray[np.float64]] = field(default_factory=list)
    frames: list[tuple[int, NDArray[np.uint8]]] = field(default_factory=list)
    replayed: EpisodeRecord | None = None

    @property
    def reproduced(self) -> bool:
        """Whether the replay is the evaluated episode (same steps, success and action flags)."""
        return self.replayed == self.evaluated

    @property
    def end_effector_path(self) -> NDArray[np.float64]:
        """The end effector's position after each step, ``(steps + 1, 3)``, m."""
        assert self.arm is not None, "not replayed yet"
        return np.array([poses[self.arm.end_effector, :3] for poses in self.link_poses])


def choose_episodes(suites: Sequence[SuiteResult], episodes: Sequence[EpisodeRecord], worst: int = 4) -> list[Choice]:
    """Per suite: the worst contexts (success < 1, at most ``worst``), a typical passing one, the training contexts."""
    choices: list[Choice] = []
    for suite in suites:
        why: dict[int, list[str]] = {}
        failing = sorted(
            (c for c in suite.per_context if c.success.mean < 1.0), key=lambda c: (c.success.mean, c.index)
        )
        for context in failing[:worst]:
            why.setdefault(context.index, []).append("worst")
        passing = sorted(
            (c for c in suite.per_context if c.success.mean == 1.0), key=lambda c: (c.time_to_goal_s.mean, c.index)
        )
        if passing:
            why.setdefault(passing[len(passing) // 2].index, []).append("typical pass")
        if suite.context_set == "train":
            for context in suite.per_context:
                why.setdefault(context.index, []).append("training context")
        for index in sorted(why):
            here = [e for e in episodes if e.suite == suite.name and e.context_index == index]
            failed = [e for e in here if not e.success]
            if failed:
                pick = failed[0]
            else:
                by_length = sorted(here, key=lambda e: (e.steps, e.episode))
                pick = by_length[len(by_length) // 2]
            choices.append(Choice(suite.name, index, pick.episode, tuple(why[index])))
    return choices


def _observer(
    envs: Sequence[gym.Env[Any, Any]], watched: Mapping[int, EpisodeTrace], capture: Capture | None, frame_every: int
) -> Callable[[int, NDArray[Any] | None], None]:
    """Fills the watched envs' traces after each reset and step (see :func:`sim.rollout.run_lockstep`)."""
    scenes: dict[int, ArmScene] = {}

    def observe(i: int, action: NDArray[Any] | None) -> None:
        trace = watched.get(i)
        if trace is None:
            return
        env = envs[i]
        if action is None:  # after the reset: the arm's body and the goal exist now
            scenes[i] = arm_scene(env)
            trace.arm = scenes[i].arm
        else:
            trace.command.append(commanded(env, action))
        state = env.unwrapped.joint_state()  # type: ignore[attr-defined]
        trace.joint_position.append(np.asarray(state.joint_position, dtype=np.float64))
        trace.joint_velocity.append(np.asarray(state.joint_velocity, dtype=np.float64))
        trace.link_poses.append(scenes[i].link_poses())
        step = len(trace.command)
        if capture is not None and (step % frame_every == 0 or step == trace.evaluated.steps):
            trace.frames.append((step, capture(scenes[i])))

    return observe


def replay(
    tasks: Sequence[Task],
    evaluated: Sequence[EpisodeRecord],
    choices: Sequence[Choice],
    policy_for: Callable[[tuple[str, ...]], BatchPolicy],
    control_hz: float,
    capture: Capture | None = None,
    frame_every: int = 1,
) -> list[EpisodeTrace]:
    """Run again the tasks that hold the chosen episodes, observing those episodes.

    Args:
        tasks: The gate's tasks (:func:`pipeline.gate.runner.plan_tasks` of the same config).
        evaluated: The gate's episode records.
        choices: The episodes to observe.
        policy_for: Builds the batched policy for the env's observation names (the gate's ONNX policy).
        control_hz: The env's control rate.
        capture: A camera; None records no frames.
        frame_every: Capture every this many control steps (and always the first and the last step).

    Returns:
        One trace per choice, in the order of ``choices``.
    """
    records = {(e.suite, e.context_index, e.episode): e for e in evaluated}
    traces = {
        (c.suite, c.context_index, c.episode): EpisodeTrace(
            choice=c,
            evaluated=records[(c.suite, c.context_index, c.episode)],
            context_rad=records[(c.suite, c.context_index, c.episode)].context_rad,
            control_hz=control_hz,
        )
        for c in choices
    }
    policies: dict[tuple[str, ...], BatchPolicy] = {}
    for task in tasks:
        keys = [(task.suite, c, e) for c, e in zip(task.context_indices, task.episodes, strict=True)]
        watched = {i: traces[key] for i, key in enumerate(keys) if key in traces}
        if not watched:
            continue
        kwargs = json.loads(task.env_config)
        envs = [gym.make(task.env_id, **kwargs) for _ in task.seeds]
        try:
            names: tuple[str, ...] = envs[0].unwrapped.observation_names  # type: ignore[attr-defined]
            policy = policies.setdefault(names, policy_for(names))

            observe = _observer(envs, watched, capture, frame_every)
            batch = run_lockstep(envs, policy, task.seeds, task.contexts, observe)
        finally:
            for env in envs:
                env.close()
        for i, trace in watched.items():
            trace.replayed = trace.evaluated.model_copy(
                update={
                    "success": bool(batch.success[i]),
                    "steps": int(batch.steps[i]),
                    "non_finite_action": bool(batch.non_finite_action[i]),
                }
            )
    return [traces[(c.suite, c.context_index, c.episode)] for c in choices]
