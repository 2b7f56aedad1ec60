"""``symgate symmetry check``: does a Minari dataset (and its simulator) respect a symmetry spec?

A wrong symmetry map is the silent failure of symmetry-aligned RL: a consistency loss built on it
looks perfect while it teaches the policy the wrong invariance. So the map itself is checked
against what it claims, on the dataset's own transitions (s, a, s′):

1. **Reward/termination invariance.** The reach rule (hand from the URDF's forward kinematics of
   the joint field, within ``radius`` of the goal field; the rule ingestion used) is evaluated on
   s′ and on g·s′ for ``group_draws`` random g from the FULL group per transition. A correct spec
   changes neither the reward nor the hand–goal distance d: we report the fraction of (transition,
   g) pairs whose reward flips (must be 0) and ``max |d(g·s′) - d(s′)|`` (must be ~0).
2. **Dynamics equivariance.** For ``samples`` random transitions and random g from the full group,
   the eval env (domain randomisation off) is reset at g·s (context = bearing of g·goal, joint
   state from g·s), stepped with g·a, and compared with g·s′. The residual without g (reset at s,
   step a, compare with s′) is the baseline: ingestion's resampling error. Per field we report the
   median and p95 of the residual norm ``‖env(g·s, g·a) - g·s′‖`` (angles compared on the circle)
   and their ratios to the baseline. For a correct spec the env is exactly equivariant and the map
   an isometry per field, so the ratio is ~1.

The spec is violated when any reward flips, the distance changes by more than
``max_distance_change_m``, or a field's residual exceeds ``max_residual_ratio`` × its baseline
(and the absolute ``residual_floor``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from rich.table import Table

from models.symmetry import BoundSymmetry, SymmetrySpec, SymmetrySpecError
from pipeline.datasets import episodes, open_dataset
from pipeline.ingest.config import IngestConfig, ReachReward
from pipeline.io import ConfigError, load_config
from sim.robot import RobotDescription, load_robot_description  # importing sim registers the symgate envs
from sim.robots.env import robot_of
from sim.robots.interface import SimulatedArm
from sim.robots.profile import Robot, load_profile


def load_symmetry_spec(path: Path) -> SymmetrySpec:
    """Load a symmetry spec YAML.

    Raises:
        ConfigError: Naming the file and each offending field.
    """
    return load_config(path, SymmetrySpec)


class CheckTolerances(BaseModel):
    """When a spec counts as violated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_reward_flip_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Largest tolerated fraction of (transition, g) pairs whose reward changes."
    )
    max_distance_change_m: float = Field(
        1e-6, ge=0.0, description="Largest tolerated change of the hand–goal distance under g, in m."
    )
    max_residual_ratio: float = Field(
        10.0, gt=0.0, description="Largest tolerated ratio of a field's residual with g to its baseline (median, p95)."
    )
    residual_floor: float = Field(
        1e-6, ge=0.0, description="Residuals (median, p95) up to this value pass whatever the ratio (float32 rounding)."
    )


class FieldResidual(BaseModel):
    """Dynamics residual of one observation field, with and without the group element."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="Observation field name.")
    baseline_median: float = Field(description="Median of ‖env(s, a) - s′‖ over the sampled transitions.")
    baseline_p95: float = Field(description="95th percentile of ‖env(s, a) - s′‖.")
    median: float = Field(description="Median of ‖env(g·s, g·a) - g·s′‖.")
    p95: float = Field(description="95th percentile of ‖env(g·s, g·a) - g·s′‖.")
    ratio_median: float = Field(description="median / max(baseline_median, residual_floor).")
    ratio_p95: float = Field(description="p95 / max(baseline_p95, residual_floor).")
    passed: bool = Field(description="Both ratios within max_residual_ratio (or both residuals under the floor).")


class SymmetryCheckReport(BaseModel):
    """The result of checking one spec against one dataset."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(description="The Minari dataset checked.")
    env_id: str = Field(description="The eval env the dynamics were checked in.")
    spec: SymmetrySpec = Field(description="The spec checked.")
    seed: int = Field(description="Seed of the transition and group-element draws.")
    transitions: int = Field(description="Transitions in the dataset (all are used for the reward check).")
    group_draws: int = Field(description="Group elements drawn per transition for the reward check.")
    samples: int = Field(description="Transitions sampled for the dynamics check.")
    reward_flips: int = Field(description="(transition, g) pairs whose recomputed reward changed under g.")
    reward_flip_fraction: float = Field(description="reward_flips / (transitions × group_draws).")
    max_distance_change_m: float = Field(description="Largest |d(g·s′) - d(s′)| of the hand–goal distance, m.")
    dataset_reward_mismatch_fraction: float = Field(
        description="Fraction of transitions whose stored reward differs from the recomputed one (informative)."
    )
    fields: list[FieldResidual] = Field(description="Dynamics residual per observation field.")
    tolerances: CheckTolerances = Field(description="The tolerances applied.")
    violations: list[str] = Field(description="Why the spec fails; empty when it passes.")
    passed: bool = Field(description="True when there are no violations.")


@dataclass
class _Transitions:
    observations: NDArray[np.float64]
    actions: NDArray[Any]
    next_observations: NDArray[np.float64]
    rewards: NDArray[np.float64]


def _load_transitions(dataset: Any, dataset_id: str) -> _Transitions:
    obs, actions, nxt, rewards = [], [], [], []
    for episode in episodes(dataset, dataset_id):
        obs.append(np.asarray(episode.observations[:-1], dtype=np.float64))
        nxt.append(np.asarray(episode.observations[1:], dtype=np.float64))
        actions.append(np.asarray(episode.actions))
        rewards.append(np.asarray(episode.rewards, dtype=np.float64))
    if not obs:
        raise ConfigError(f"dataset {dataset_id}: no episodes")
    return _Transitions(np.concatenate(obs), np.concatenate(actions), np.concatenate(nxt), np.concatenate(rewards))


@dataclass(frozen=True)
class _Layout:
    """Where the reach rule's inputs and the env's reset state live in the observation vector."""

    joints: list[int]  # joint_field components, in the robot's chain order
    velocities: list[int]  # joint_velocity components, chain order (for the reset); empty if absent
    goal: tuple[int, ...]  # goal (x, y) or (x, y, z), as the robot's end effector
    angles: NDArray[np.bool_]  # components compared on the circle
    fields: dict[str, list[int]]


def _layout(
    names: list[str],
    config: IngestConfig,
    reward: ReachReward,
    robot: RobotDescription | Robot,
    symmetry: BoundSymmetry,
) -> _Layout:
    index = {name: i for i, name in enumerate(names)}

    def indices(field: str, components: tuple[str, ...]) -> list[int]:
        missing = [c for c in components if f"{field}.{c}" not in index]
        if missing:
            raise ConfigError(f"dataset observations lack {field}.{missing[0]} (observation names: {names})")
        return [index[f"{field}.{c}"] for c in components]

    joints = indices(reward.joint_field, robot.joint_names)
    velocity_field = "joint_velocity"
    velocities = (
        indices(velocity_field, robot.joint_names) if f"{velocity_field}.{robot.joint_names[0]}" in index else []
    )
    _, hand = robot.forward_kinematics(np.zeros(len(robot.joint_names)))
    goal = tuple(indices(reward.goal_field, ("x", "y", "z")[: np.shape(hand)[-1]]))  # as many axes as the hand
    angles = np.array([name in symmetry.observation_angle_names for name in names])
    for field, mapping in config.observations.items():
        for joint in mapping.wrap_joints:
            if f"{field}.{joint}" in index:
                angles[index[f"{field}.{joint}"]] = True
    fields: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        fields.setdefault(name.split(".", 1)[0], []).append(i)
    return _Layout(joints, velocities, goal, angles, fields)


def _hand_goal_distance(
    observations: NDArray[np.float64], layout: _Layout, robot: RobotDescription | Robot
) -> NDArray[np.float64]:
    """The hand–goal distance ‖FK_hand(q) - goal‖ for observations of shape (..., D)."""
    _, hand = robot.forward_kinematics(observations[..., layout.joints])
    goal = observations[..., list(layout.goal)]
    distance: NDArray[np.float64] = np.linalg.norm(hand - goal, axis=-1)
    return distance


def _gap(a: NDArray[np.float64], b: NDArray[np.float64], angles: NDArray[np.bool_]) -> NDArray[np.float64]:
    diff = a - b
    wrapped = (diff + math.pi) % (2.0 * math.pi) - math.pi
    return np.asarray(np.where(angles, wrapped, diff), dtype=np.float64)


def _eval_env(metadata: dict[str, Any], dataset_id: str) -> tuple[str, SimulatedArm]:
    raw = metadata.get("eval_env_spec") or metadata.get("symgate", {}).get("eval_env_spec")
    if raw is None:
        raise ConfigError(f"dataset {dataset_id}: metadata has no eval_env_spec; was it made by symgate ingest?")
    spec = json.loads(raw) if isinstance(raw, str) else dict(raw)
    robot = robot_of(spec)
    # Without randomisation: the residual must measure the map, not injected noise.
    if robot is not None:  # a robot profile's env
        kwargs: dict[str, Any] = {"robot": robot, "randomization": {}}
    else:
        config = dict(spec.get("kwargs", {}).get("config", {}))
        config.pop("randomization", None)
        kwargs = {"config": config}
    env = gym.make(spec["id"], **kwargs).unwrapped
    if not isinstance(env, SimulatedArm):
        raise ConfigError(f"dataset {dataset_id}: eval env {spec['id']} is not a symgate reach env")
    return str(spec["id"]), env


def _step_from(env: SimulatedArm, state: NDArray[np.float64], action: Any, layout: _Layout) -> NDArray[np.float64]:
    goal = state[list(layout.goal)]
    options: dict[str, Any] = {
        "context": math.atan2(goal[1], goal[0]),
        "joint_position": state[layout.joints],
    }
    if layout.velocities:
        options["joint_velocity"] = state[layout.velocities]
    env.reset(options=options)
    observation, *_ = env.step(action)
    return np.asarray(observation, dtype=np.float64)


def check_symmetry(
    spec: SymmetrySpec,
    dataset_id: str,
    *,
    samples: int = 256,
    group_draws: int = 8,
    seed: int = 0,
    tolerances: CheckTolerances | None = None,
) -> SymmetryCheckReport:
    """Check how well a dataset and its simulator respect a symmetry spec.

    Args:
        spec: The symmetry spec.
        dataset_id: A Minari dataset made by ``symgate ingest`` (in ``$MINARI_DATASETS_PATH``).
        samples: Transitions sampled for the dynamics check (each costs two env resets and steps).
        group_draws: Group elements per transition for the reward check.
        seed: Seed of every random draw.
        tolerances: When the spec counts as violated.

    Returns:
        The report (``passed`` False with reasons in ``violations`` when the spec is violated).

    Raises:
        DatasetError: The dataset does not exist, cannot be read or lacks symgate metadata.
        ConfigError: The spec does not fit the dataset's names.
    """
    tolerances = tolerances or CheckTolerances()
    dataset, meta = open_dataset(dataset_id)
    config = IngestConfig.model_validate(meta["ingest_config"])
    if not isinstance(config.reward, ReachReward):
        raise ConfigError(
            f"dataset {dataset_id}: the symmetry check needs the reach reward rule, not {config.reward.kind}"
        )
    reward = config.reward
    names = list(meta["observation_names"])
    table = meta.get("discrete_action_torques")
    try:
        symmetry = spec.bind(names, meta["action_names"], None if table is None else np.asarray(table))
    except SymmetrySpecError as error:
        raise ConfigError(f"spec does not fit dataset {dataset_id}: {error}") from error
    robot = load_profile(config.robot) if config.robot is not None else load_robot_description(config.env.urdf)
    layout = _layout(names, config, reward, robot, symmetry)
    data = _load_transitions(dataset, dataset_id)
    count = len(data.rewards)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    # 1. Reward/termination invariance on every transition, group_draws elements each.
    g = symmetry.sample((group_draws, count), generator, full_group=True, dtype=torch.float64)
    moved = symmetry.act_observation(torch.from_numpy(data.next_observations), g).numpy()
    distance = _hand_goal_distance(data.next_observations, layout, robot)
    moved_distance = _hand_goal_distance(moved, layout, robot)
    radius = reward.radius
    flips = int(((moved_distance <= radius) != (distance <= radius)[None, :]).sum())
    distance_change = float(np.abs(moved_distance - distance[None, :]).max())
    stored_mismatch = float(np.mean((distance <= radius).astype(np.float64) != data.rewards))

    # 2. Dynamics equivariance on sampled transitions, against the no-g baseline.
    env_id, env = _eval_env(dict(dataset.storage.metadata), dataset_id)
    try:
        missing = [name for name in names if name not in env.observation_names]
        if missing:
            raise ConfigError(f"dataset {dataset_id}: eval env {env_id} does not observe {missing[0]!r}")
        by_name = [env.observation_names.index(name) for name in names]  # env vector → dataset layout
        chosen = rng.choice(count, size=min(samples, count), replace=False)
        g = symmetry.sample((len(chosen),), generator, full_group=True, dtype=torch.float64)
        s = torch.from_numpy(data.observations[chosen])
        gs = symmetry.act_observation(s, g).numpy()
        gs_next = symmetry.act_observation(torch.from_numpy(data.next_observations[chosen]), g).numpy()
        actions = data.actions[chosen]
        if symmetry.discrete:
            g_actions: NDArray[Any] = symmetry.act_discrete_action(
                torch.from_numpy(actions.astype(np.int64)), g
            ).numpy()
        else:
            g_actions = symmetry.act_action(torch.from_numpy(actions.astype(np.float64)), g).numpy()
        baseline = np.stack([_step_from(env, data.observations[i], actions[k], layout) for k, i in enumerate(chosen)])
        transformed = np.stack([_step_from(env, gs[k], g_actions[k], layout) for k in range(len(chosen))])
        baseline, transformed = baseline[:, by_name], transformed[:, by_name]
    finally:
        env.close()
    baseline_gap = _gap(baseline, data.next_observations[chosen], layout.angles)
    transformed_gap = _gap(transformed, gs_next, layout.angles)

    fields: list[FieldResidual] = []
    floor = tolerances.residual_floor
    for field, ids in layout.fields.items():
        base = np.linalg.norm(baseline_gap[:, ids], axis=1)
        moved_residual = np.linalg.norm(transformed_gap[:, ids], axis=1)
        base_median, base_p95 = float(np.median(base)), float(np.percentile(base, 95))
        median, p95 = float(np.median(moved_residual)), float(np.percentile(moved_residual, 95))
        ratio_median, ratio_p95 = median / max(base_median, floor), p95 / max(base_p95, floor)
        passed = all(
            value <= floor or ratio <= tolerances.max_residual_ratio
            for value, ratio in ((median, ratio_median), (p95, ratio_p95))
        )
        fields.append(
            FieldResidual(
                field=field,
                baseline_median=base_median,
                baseline_p95=base_p95,
                median=median,
                p95=p95,
                ratio_median=ratio_median,
                ratio_p95=ratio_p95,
                passed=passed,
            )
        )

    violations: list[str] = []
    flip_fraction = flips / (count * group_draws)
    if flip_fraction > tolerances.max_reward_flip_fraction:
        violations.append(
            f"reward/termination changes under the group for {flips} of {count * group_draws} "
            f"(transition, g) pairs ({flip_fraction:.2%})"
        )
    if distance_change > tolerances.max_distance_change_m:
        violations.append(f"the hand–goal distance changes by up to {distance_change:.3g} m under the group")
    for residual in fields:
        if not residual.passed:
            violations.append(
                f"dynamics of {residual.field!r} are not equivariant: residual {residual.median:.3g} (median) / "
                f"{residual.p95:.3g} (p95) is {max(residual.ratio_median, residual.ratio_p95):.1f}x the baseline"
            )
    return SymmetryCheckReport(
        dataset_id=dataset_id,
        env_id=env_id,
        spec=spec,
        seed=seed,
        transitions=count,
        group_draws=group_draws,
        samples=len(chosen),
        reward_flips=flips,
        reward_flip_fraction=flip_fraction,
        max_distance_change_m=distance_change,
        dataset_reward_mismatch_fraction=stored_mismatch,
        fields=fields,
        tolerances=tolerances,
        violations=violations,
        passed=not violations,
    )


def report_table(report: SymmetryCheckReport) -> Table:
    """A rich table of a check report: the reward checks, then the dynamics residual of each field."""
    verdict = "[green]respects the spec[/]" if report.passed else "[bold red]VIOLATES the spec[/]"
    table = Table(
        title=f"Symmetry check of {report.dataset_id}: {verdict}",
        caption=f"rewards: {report.transitions} transitions × {report.group_draws} g; dynamics: {report.samples} "
        f"transitions in {report.env_id}; g from the full group",
    )
    for column in ("check", "base med", "base p95", "g med", "g p95", "ratio", "ok"):
        table.add_column(column, justify="left" if column == "check" else "right")

    def mark(ok: bool) -> str:
        return "[green]✓[/]" if ok else "[bold red]✗[/]"

    tolerances = report.tolerances
    flips = f"{report.reward_flips} ({report.reward_flip_fraction:.1%})"
    table.add_row(
        "reward flips", "", "", "", flips, "", mark(report.reward_flip_fraction <= tolerances.max_reward_flip_fraction)
    )
    change = f"{report.max_distance_change_m:.2g}"
    table.add_row(
        "Δ hand–goal (m)",
        "",
        "",
        "",
        change,
        "",
        mark(report.max_distance_change_m <= tolerances.max_distance_change_m),
    )
    for residual in report.fields:
        table.add_row(
            residual.field,
            f"{residual.baseline_median:.2g}",
            f"{residual.baseline_p95:.2g}",
            f"{residual.median:.2g}",
            f"{residual.p95:.2g}",
            f"{max(residual.ratio_median, residual.ratio_p95):.2f}",
            mark(residual.passed),
        )
    return table
