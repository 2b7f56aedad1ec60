"""Behaviour policies for any robot profile: a damped-least-squares IK expert and the dataset recipes.

The expert reads joint positions, joint velocities and the goal from the observation *by name*,
evaluates the end effector's position p(q) and position Jacobian J(q) on the URDF chain, and
takes the damped-least-squares joint step towards the goal g:

    Δq = Jᵀ (J Jᵀ + λ² I)⁻¹ (g − p),

commanded as ``velocity``: q̇ = k·Δq, ``position``: q + k·Δq·dt, or ``effort``: τ = k·Δq − kd·q̇,
then scaled uniformly into ``max_fraction`` of the action limits (the direction is kept).

It is rotation-symmetric by construction: turning the symmetry joint (whose axis is base z through
the origin) by θ rotates p and every Jacobian column by R_z(θ), and the context rotates g the same
way, so g − p → R(g − p), J → RJ and Δq = Jᵀ(JJᵀ + λ²I)⁻¹(g − p) is unchanged (RᵀR = I): velocity
and effort commands are invariant, position targets shift by θ on the symmetry joint only.

Recipes (as for the reacher): ``expert``, ``suboptimal`` (ε-random, plus optional Gaussian noise),
``mixed`` (half each) and ``asymmetric`` (a bias that depends on the absolute goal bearing, to
produce non-symmetric coverage on purpose).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from sim.behaviour import BehaviourPolicy, RecipeName, field_indices
from sim.robots.profile import ExpertGains, Robot


class ReachExpert:
    """The DLS-IK expert of a profile (see the module docstring).

    Args:
        robot: The robot (kinematics, limits, interface).
        observation_names: Component names of the env's observation vector.
        gains: Gains; the profile's ``expert`` section when None.
    """

    name = "expert"

    def __init__(self, robot: Robot, observation_names: Sequence[str], gains: ExpertGains | None = None) -> None:
        self.robot = robot
        self.gains = gains or robot.profile.expert
        names = list(observation_names)
        self._position = [names.index(f"joint_position.{j}") for j in robot.joint_names]
        self._velocity = [names.index(f"joint_velocity.{j}") for j in robot.joint_names]
        self._goal = field_indices(names, "goal_position")
        self.low, self.high = robot.action_limits()
        self.interface = robot.profile.action.interface
        self._velocity_limit = np.array([limit.velocity for limit in robot.limits])
        self.dt = 1.0 / robot.profile.control_hz
        self._link = robot.profile.task.end_effector
        self._yaw = robot.joint_names.index(robot.symmetry_joint)

    def goal(self, observation: NDArray[np.floating]) -> NDArray[np.float64]:
        """The ``goal_position`` field of an observation, m."""
        return np.asarray(observation, dtype=np.float64)[self._goal]

    def step(self, observation: NDArray[np.floating]) -> NDArray[np.float64]:
        """The damped-least-squares joint step Δq towards the goal, rad (or m)."""
        obs = np.asarray(observation, dtype=np.float64)
        point, jacobian = self.robot.kinematics.jacobian(self._link, obs[self._position])
        error = self.goal(obs) - point
        damping = self.gains.damping**2 * np.eye(3)
        step: NDArray[np.float64] = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping, error)
        return step

    def _scaled(self, command: NDArray[np.float64], centre: NDArray[np.float64]) -> NDArray[np.float64]:
        """Scale ``command - centre`` uniformly so that it stays within max_fraction of the limits."""
        half = self.gains.max_fraction * (self.high - self.low) / 2.0
        offset = command - centre
        ratio = float(np.max(np.abs(offset) / half))
        return centre + (offset / ratio if ratio > 1.0 else offset)

    def command(self, observation: NDArray[np.floating]) -> NDArray[np.float64]:
        """The expert's command (the action before any noise), in the interface's unit."""
        obs = np.asarray(observation, dtype=np.float64)
        step = self.step(obs)
        k = self.gains.gain
        if self.interface == "velocity":
            return self._scaled(k * step, np.zeros_like(step))
        if self.interface == "effort":
            return self._scaled(k * step - self.gains.kd * obs[self._velocity], np.zeros_like(step))
        # A position target one bounded step ahead: the velocity k·Δq held for one control period.
        offset = k * self.dt * step
        ratio = float(np.max(np.abs(offset) / (self.gains.max_fraction * self._velocity_limit * self.dt)))
        return np.clip(obs[self._position] + (offset / ratio if ratio > 1.0 else offset), self.low, self.high)

    def clip(self, command: NDArray[np.float64]) -> NDArray[np.float64]:
        """Clip a command to the action limits."""
        clipped: NDArray[np.float64] = np.clip(command, self.low, self.high)
        return clipped

    def random(self, rng: np.random.Generator, observation: NDArray[np.floating]) -> NDArray[np.float64]:
        """A uniformly random action (velocity/effort in the limits; position: a random step from here)."""
        if self.interface == "position":
            position = np.asarray(observation, dtype=np.float64)[self._position]
            return self.clip(position + self.gains.gain * self.dt * rng.uniform(-1.0, 1.0, size=position.shape))
        sample: NDArray[np.float64] = rng.uniform(self.low, self.high)
        return sample

    def __call__(self, observation: NDArray[np.floating], rng: np.random.Generator) -> NDArray[np.float64]:
        """The greedy expert action (``rng`` is unused)."""
        return self.clip(self.command(observation))


class NoisyReachExpert:
    """With probability ε a random action, otherwise the expert plus Gaussian noise (fraction of the limits)."""

    name = "suboptimal"

    def __init__(self, base: ReachExpert) -> None:
        self.base = base

    def __call__(self, observation: NDArray[np.floating], rng: np.random.Generator) -> NDArray[np.float64]:
        """A random action with probability ε, else the noisy expert action."""
        gains = self.base.gains
        if rng.random() < gains.epsilon:
            return self.base.random(rng, observation)
        command = self.base.command(observation)
        if gains.noise_fraction > 0:
            scale = gains.noise_fraction * (self.base.high - self.base.low) / 2.0
            command = command + rng.normal(0.0, 1.0, size=command.shape) * scale
        return self.base.clip(command)


class AsymmetricReachExpert:
    """The expert plus a bias ``b·(cos φ, sin φ, cos φ, …)·limit`` that depends on the absolute goal bearing φ.

    Its behaviour differs between contexts that are rotations of each other, so data it collects
    over several contexts has non-symmetric coverage (a deliberate violation of the symmetry).
    """

    name = "asymmetric"

    def __init__(self, base: ReachExpert) -> None:
        self.base = base

    def __call__(self, observation: NDArray[np.floating], rng: np.random.Generator) -> NDArray[np.float64]:
        """The expert action shifted by the bearing-dependent bias."""
        goal = self.base.goal(observation)
        bearing = math.atan2(goal[1], goal[0])
        count = len(self.base.low)
        pattern = np.array([math.cos(bearing) if i % 2 == 0 else math.sin(bearing) for i in range(count)])
        scale = (self.base.high - self.base.low) / 2.0
        if self.base.interface == "position":
            scale = np.full(count, self.base.gains.gain * self.base.dt)
        return self.base.clip(self.base.command(observation) + self.base.gains.asymmetric_bias * pattern * scale)


def reach_recipe_policies(
    recipe: RecipeName, robot: Robot, observation_names: Sequence[str], episodes: int
) -> list[BehaviourPolicy]:
    """The behaviour policy of each episode of a dataset recipe, for any profile.

    Args:
        recipe: ``expert``, ``suboptimal``, ``mixed`` (first half expert) or ``asymmetric``.
        robot: The robot.
        observation_names: The env's observation component names.
        episodes: Number of episodes.

    Returns:
        One policy per episode.
    """
    expert = ReachExpert(robot, observation_names)
    if recipe == "expert":
        return [expert] * episodes
    if recipe == "suboptimal":
        return [NoisyReachExpert(expert)] * episodes
    if recipe == "mixed":
        half = (episodes + 1) // 2
        return [expert] * half + [NoisyReachExpert(expert)] * (episodes - half)
    if recipe == "asymmetric":
        return [AsymmetricReachExpert(expert)] * episodes
    raise ValueError(f"unknown recipe {recipe!r}; expected expert, suboptimal, mixed or asymmetric")
