"""Behaviour policies that generate the reacher's offline data, and the paper's dataset recipes.

The expert is rotation-symmetric by construction: inverse kinematics puts the joint target at
``(bearing(goal) - α, β)`` where α, β depend only on link lengths and goal distance, and a PD law
on the wrapped joint error turns it into torques. Rotating the context adds θ to both the
shoulder angle and the goal bearing, so the torques, which depend only on their difference, are
unchanged: π(g·o) = π(o) exactly.

Recipes (paper, Section 5): ``expert`` (greedy), ``suboptimal`` (ε-random with ε = 0.6),
``mixed`` (half of each), and ``asymmetric``, an expert with a torque bias that depends on the
absolute goal bearing, to produce non-symmetric coverage on purpose.

``BehaviourConfig.expert: dqn`` swaps the analytic expert for the paper's kind of behaviour policy,
a symmetric DQN trained online in one context (:mod:`sim.dqn_expert`, discrete actions only):
greedy for ``expert``, ε-greedy for ``suboptimal``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.contexts import wrap_angle
from sim.reacher import RotationalReacherDiscreteEnv, RotationalReacherEnv
from sim.robot import RobotDescription

if TYPE_CHECKING:
    from sim.dqn_expert import DQNExpert

RecipeName = Literal["expert", "suboptimal", "mixed", "asymmetric"]
#: The expert behind the recipes: the analytic IK + PD law, or a trained symmetric DQN.
ExpertKind = Literal["analytic", "dqn"]
Action = NDArray[np.float64] | int


class BehaviourConfig(BaseModel):
    """Gains and noise levels of the behaviour policies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kp: float = Field(40.0, gt=0.0, description="Proportional gain of the expert's joint PD law, N·m/rad.")
    kd: float = Field(2.0, ge=0.0, description="Derivative gain of the expert's joint PD law, N·m·s/rad.")
    elbow_sign: Literal[1, -1] = Field(1, description="IK branch of the expert: +1 elbow angle positive, -1 negative.")
    epsilon: float = Field(
        0.6, ge=0.0, le=1.0, description="Probability of a uniformly random action in suboptimal data."
    )
    torque_noise_std: float = Field(
        0.0, ge=0.0, description="Std of Gaussian noise on suboptimal torques, N·m (continuous actions only)."
    )
    asymmetric_bias: float = Field(
        0.8, ge=0.0, description="Size of the asymmetric expert's bearing-dependent torque bias, N·m."
    )
    expert: ExpertKind = Field(
        "analytic", description="analytic: the IK + PD expert; dqn: the symmetric DQN of dqn_checkpoint (discrete)."
    )
    dqn_checkpoint: Path | None = Field(
        None, description="Checkpoint folder of the DQN expert (sim.dqn_expert.trained_dqn), when expert is dqn."
    )

    @model_validator(mode="after")
    def _dqn_needs_checkpoint(self) -> BehaviourConfig:
        if self.expert == "dqn" and self.dqn_checkpoint is None:
            raise ValueError("expert: dqn needs dqn_checkpoint (a folder written by sim.dqn_expert.trained_dqn)")
        return self


class BehaviourPolicy(Protocol):
    """Maps an observation to an env action; all randomness comes from ``rng``."""

    name: str

    def __call__(self, observation: NDArray[np.floating], rng: np.random.Generator) -> Action:
        """The action to take in ``observation``."""
        ...


def field_indices(names: Sequence[str], field: str) -> list[int]:
    """Indices of the components of a named observation field (e.g. ``joint_position``)."""
    indices = [i for i, name in enumerate(names) if name.split(".", 1)[0] == field]
    if not indices:
        raise KeyError(f"observation has no field {field!r}; its components are {list(names)}")
    return indices


@dataclass
class _ActionCodec:
    """Turns torques into env actions (identity for continuous, nearest grid level for discrete)."""

    tau_max: NDArray[np.float64]
    discrete: bool

    def encode(self, torque: NDArray[np.float64]) -> Action:
        torque = np.clip(torque, -self.tau_max, self.tau_max)
        if not self.discrete:
            return torque
        # {-τ, 0, τ} per joint with a dead band of τ/3; index = 3·shoulder_level + elbow_level.
        level = np.where(torque > self.tau_max / 3, 2, np.where(torque < -self.tau_max / 3, 0, 1))
        return int(3 * level[0] + level[1])

    def random(self, rng: np.random.Generator) -> Action:
        if self.discrete:
            return int(rng.integers(9))
        return rng.uniform(-self.tau_max, self.tau_max)


class ExpertPolicy:
    """Inverse kinematics to the goal plus a PD law on joint angles; exactly rotation-symmetric.

    With goal g at distance r and bearing φ, link lengths l1, l2 and elbow branch s = ±1:
    ``q2* = s·acos((r² - l1² - l2²) / (2·l1·l2))``, ``q1* = φ - atan2(l2·sin q2*, l1 + l2·cos q2*)``,
    ``τ = clip(kp·wrap(q* - q) - kd·q̇, ±τmax)``.

    Args:
        robot: The arm (link lengths, torque limits).
        observation_names: Component names of the env's observation vector.
        discrete: Emit discrete action indices instead of torques.
        config: Gains.
    """

    name = "expert"

    def __init__(
        self, robot: RobotDescription, observation_names: Sequence[str], discrete: bool, config: BehaviourConfig
    ) -> None:
        self.robot = robot
        self.config = config
        self.codec = _ActionCodec(robot.effort_limits, discrete)
        self._position = field_indices(observation_names, "joint_position")
        self._velocity = field_indices(observation_names, "joint_velocity")
        self._goal = field_indices(observation_names, "goal_position")

    def goal(self, observation: NDArray[np.floating]) -> NDArray[np.float64]:
        """The ``goal_position`` field of an observation, m."""
        return np.asarray(observation, dtype=np.float64)[self._goal]

    def joint_target(self, goal: NDArray[np.float64]) -> NDArray[np.float64]:
        """IK solution ``(q1*, q2*)`` that puts the hand on ``goal`` (clamped to the workspace)."""
        l1, l2 = self.robot.link_lengths
        r = float(np.hypot(goal[0], goal[1]))
        cos_elbow = np.clip((r * r - l1 * l1 - l2 * l2) / (2.0 * l1 * l2), -1.0, 1.0)
        elbow = self.config.elbow_sign * math.acos(cos_elbow)
        shoulder = math.atan2(goal[1], goal[0]) - math.atan2(l2 * math.sin(elbow), l1 + l2 * math.cos(elbow))
        return np.array([shoulder, elbow])

    def torque(self, observation: NDArray[np.floating]) -> NDArray[np.float64]:
        """The expert's joint torques for an observation, N·m."""
        obs = np.asarray(observation, dtype=np.float64)
        error = wrap_angle(self.joint_target(self.goal(obs)) - obs[self._position])
        return self.config.kp * error - self.config.kd * obs[self._velocity]

    def __call__(self, observation: NDArray[np.floating], rng: np.random.Generator) -> Action:
        """The greedy expert action (``rng`` is unused)."""
        return self.codec.encode(self.torque(observation))


class EpsilonRandomPolicy:
    """With probability ε a uniformly random action, otherwise the base policy (plus torque noise)."""

    name = "suboptimal"

    def __init__(self, base: ExpertPolicy, config: BehaviourConfig) -> None:
        self.base = base
        self.config = config

    def __call__(self, observation: NDArray[np.floating], rng: np.random.Generator) -> Action:
        """A random action with probability ε, else the (noisy) expert action."""
        if rng.random() < self.config.epsilon:
            return self.base.codec.random(rng)
        torque = self.base.torque(observation)
        if self.config.torque_noise_std > 0 and not self.base.codec.discrete:
            torque = torque + rng.normal(0.0, self.config.torque_noise_std, size=2)
        return self.base.codec.encode(torque)


class AsymmetricExpertPolicy:
    """The expert plus a torque bias ``b·(cos φ, sin φ)`` that depends on the absolute goal bearing φ.

    Its behaviour differs between contexts that are rotations of each other, so data it collects
    over several contexts has non-symmetric coverage (a deliberate violation of the symmetry).
    """

    name = "asymmetric"

    def __init__(self, base: ExpertPolicy, config: BehaviourConfig) -> None:
        self.base = base
        self.config = config

    def __call__(self, observation: NDArray[np.floating], rng: np.random.Generator) -> Action:
        """The expert action shifted by the bearing-dependent bias."""
        goal = self.base.goal(observation)
        bearing = math.atan2(goal[1], goal[0])
        bias = self.config.asymmetric_bias * np.array([math.cos(bearing), math.sin(bearing)])
        return self.base.codec.encode(self.base.torque(observation) + bias)


def make_expert(env: RotationalReacherEnv, config: BehaviourConfig | None = None) -> ExpertPolicy:
    """The expert for ``env`` (continuous or discrete actions)."""
    return ExpertPolicy(
        env.robot, env.observation_names, isinstance(env, RotationalReacherDiscreteEnv), config or BehaviourConfig()
    )


def _load_dqn_expert(env: RotationalReacherEnv, config: BehaviourConfig) -> DQNExpert:
    """The DQN expert of ``config.dqn_checkpoint``, checked against the env it is to act in."""
    from sim.dqn_expert import DQNExpert  # torch: only when a DQN expert is asked for

    assert config.dqn_checkpoint is not None  # the config's validator
    if not isinstance(env, RotationalReacherDiscreteEnv):
        raise ValueError(f"expert: dqn acts on discrete actions; {type(env).__name__} has continuous torques")
    expert = DQNExpert.load(config.dqn_checkpoint)
    # What may differ between training and data: the contexts and the start pose (c4-poses data start the
    # arm anywhere; the DQN acts on any state, though it was trained from one start pose only).
    ignore = {
        "contexts",
        "reset_context_set",
        "randomization",
        "start_mode",
        "start_shoulder_offset_deg",
        "start_elbow_deg",
        "start_noise_deg",
    }
    trained, wanted = expert.env_config.model_dump(exclude=ignore), env.config.model_dump(exclude=ignore)
    if trained != wanted:
        changed = sorted(key for key in wanted if trained.get(key) != wanted[key])
        raise ValueError(f"{config.dqn_checkpoint}: the DQN expert was trained on another env (differs in {changed})")
    return expert


def make_behaviour_expert(env: RotationalReacherEnv, config: BehaviourConfig | None = None) -> BehaviourPolicy:
    """The greedy expert behind the recipes of ``config``: the analytic one, or the DQN (``expert: dqn``)."""
    config = config or BehaviourConfig()
    if config.expert == "dqn":
        return _load_dqn_expert(env, config)
    return make_expert(env, config)


def recipe_policies(
    recipe: RecipeName, env: RotationalReacherEnv, episodes: int, config: BehaviourConfig | None = None
) -> list[BehaviourPolicy]:
    """The behaviour policy of each episode of a dataset recipe.

    Args:
        recipe: ``expert``, ``suboptimal``, ``mixed`` (first half expert, second half suboptimal)
            or ``asymmetric`` (analytic expert only).
        env: The env the data is collected in (unwrapped).
        episodes: Number of episodes.
        config: Gains and noise levels, and which expert.

    Returns:
        One policy per episode.
    """
    config = config or BehaviourConfig()
    expert: BehaviourPolicy
    suboptimal: BehaviourPolicy
    if config.expert == "dqn":
        from sim.dqn_expert import EpsilonGreedyPolicy

        if recipe == "asymmetric":
            raise ValueError("the asymmetric recipe biases the analytic expert's torques; use expert: analytic")
        dqn = _load_dqn_expert(env, config)
        expert, suboptimal = dqn, EpsilonGreedyPolicy(dqn, config.epsilon)
    else:
        analytic = make_expert(env, config)
        expert, suboptimal = analytic, EpsilonRandomPolicy(analytic, config)
    if recipe == "expert":
        return [expert] * episodes
    if recipe == "suboptimal":
        return [suboptimal] * episodes
    if recipe == "mixed":
        half = (episodes + 1) // 2
        return [expert] * half + [suboptimal] * (episodes - half)
    if recipe == "asymmetric":
        return [AsymmetricExpertPolicy(make_expert(env, config), config)] * episodes
    raise ValueError(f"unknown recipe {recipe!r}; expected expert, suboptimal, mixed or asymmetric")


def run_episode(
    env: RotationalReacherEnv, policy: BehaviourPolicy, rng: np.random.Generator, context: float, seed: int
) -> tuple[float, int, bool]:
    """Roll out one episode; returns (undiscounted return, steps, success)."""
    observation, _ = env.reset(seed=seed, options={"context": context})
    total, steps, done, success = 0.0, 0, False, False
    while not done:
        observation, reward, terminated, truncated, info = env.step(policy(observation, rng))
        total += float(reward)
        steps += 1
        done = terminated or truncated
        success = bool(info["is_success"])
    return total, steps, success
