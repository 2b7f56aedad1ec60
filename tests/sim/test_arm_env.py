"""The generic reach env and the DLS expert, for the reacher profile and the KUKA iiwa."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim
from sim.reacher import RotationalReacherEnv
from sim.robots.env import ENV_ID, ArmReachEnv, env_contexts, env_urdf
from sim.robots.expert import AsymmetricReachExpert, NoisyReachExpert, ReachExpert, reach_recipe_policies
from sim.robots.profile import load_profile

ROBOTS = ["reacher", "kuka_iiwa"]


def _rz(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _closed_loop(
    env: ArmReachEnv, policy: ReachExpert, context: float, seed: int, steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    observation, info = env.reset(seed=seed, options={"context": context})
    joints = env.joint_count
    path, velocity, actions = [info["end_effector_position"]], [observation[joints : 2 * joints]], []
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        action = policy(observation, rng)
        observation, _, terminated, truncated, info = env.step(action)
        path.append(info["end_effector_position"])
        velocity.append(observation[joints : 2 * joints])
        actions.append(action)
        if terminated or truncated:
            break
    return np.array(path), np.array(velocity), np.array(actions)


@pytest.mark.parametrize("robot", ROBOTS)
def test_check_env_passes_and_observations_are_named(robot: str) -> None:
    env = ArmReachEnv(robot)
    check_env(env, skip_render_check=True)
    joints = env.robot.joint_names
    assert env.observation_names == (
        *(f"joint_position.{j}" for j in joints),
        *(f"joint_velocity.{j}" for j in joints),
        "goal_position.x",
        "goal_position.y",
        "goal_position.z",
    )
    assert env.action_names[0].startswith({"reacher": "joint_effort.", "kuka_iiwa": "joint_velocity_target."}[robot])


def test_gym_make_builds_the_profile_env() -> None:
    env = gym.make(sim.ARM_ENV_ID, robot="kuka_iiwa")
    observation, _ = env.reset(seed=0)
    assert observation.shape == (17,)
    env.close()


@pytest.mark.parametrize("robot", ROBOTS)
def test_rotating_the_context_rotates_the_end_effector_path(robot: str) -> None:
    """Closed loop with the expert: the path at θ is R_z(θ)·(path at 0); joint velocities and actions are equal."""
    env = ArmReachEnv(robot)
    expert = ReachExpert(env.robot, env.observation_names)
    low, high = np.deg2rad(env.profile.contexts.sector_deg)
    reference, velocity, actions = _closed_loop(env, expert, 0.0, seed=5, steps=60)
    for theta in np.random.default_rng(0).uniform(low, high, size=3):
        path, velocity_theta, actions_theta = _closed_loop(env, expert, float(theta), seed=5, steps=60)
        assert len(path) == len(reference)
        np.testing.assert_allclose(path, reference @ _rz(theta).T, atol=1e-6)
        np.testing.assert_allclose(velocity_theta, velocity, atol=1e-5)
        np.testing.assert_allclose(actions_theta, actions, atol=2e-3)


@pytest.mark.parametrize("robot", ROBOTS)
def test_the_expert_reaches_every_context(robot: str) -> None:
    env = ArmReachEnv(robot)
    expert = ReachExpert(env.robot, env.observation_names)
    contexts = env.profile.contexts.angles("test")[:10]
    steps = []
    for i, context in enumerate(contexts):
        path, _, _ = _closed_loop(env, expert, float(context), seed=i, steps=env.profile.task.max_episode_steps)
        assert np.linalg.norm(path[-1] - env.goal_position) <= env.profile.task.success_radius
        steps.append(len(path) - 1)
    assert max(steps) < env.profile.task.max_episode_steps


def test_test_contexts_respect_the_iiwa_sector() -> None:
    env = ArmReachEnv("kuka_iiwa")
    angles = np.rad2deg(np.concatenate([env.profile.contexts.angles(s) for s in ("test", "validation")]))
    assert angles.min() >= -120.0
    assert angles.max() <= 120.0


def test_the_reacher_profile_reproduces_the_reacher_env() -> None:
    """Same seeds, same torques: the generic env's joints follow RotationalReacherEnv exactly (goal z added)."""
    generic, legacy = ArmReachEnv("reacher"), RotationalReacherEnv()
    rng = np.random.default_rng(0)
    for episode in range(3):
        a, _ = generic.reset(seed=episode, options={"context": 0.9 * episode})
        b, _ = legacy.reset(seed=episode, options={"context": 0.9 * episode})
        np.testing.assert_array_equal(a[:6], b)
        for _ in range(40):
            torque = rng.uniform(-2.0, 2.0, size=2)
            a, reward_a, done_a, _, _ = generic.step(torque)
            b, reward_b, done_b, _, _ = legacy.step(torque)
            np.testing.assert_array_equal(a[:6], b)
            assert (reward_a, done_a) == (reward_b, done_b)
        assert a[6] == pytest.approx(0.05)


def test_velocity_commands_are_clipped_to_the_profile_limits() -> None:
    env = ArmReachEnv("kuka_iiwa")
    env.reset(seed=0, options={"context": 0.0})
    np.testing.assert_allclose(env.command(np.full(7, 50.0)), np.full(7, 2.0))


def test_noisy_and_asymmetric_experts() -> None:
    env = ArmReachEnv("kuka_iiwa")
    expert = ReachExpert(env.robot, env.observation_names)
    noisy, biased = NoisyReachExpert(expert), AsymmetricReachExpert(expert)
    rng = np.random.default_rng(0)
    observations = []
    for theta in (0.0, np.pi / 2):
        observation, _ = env.reset(seed=0, options={"context": theta})
        observations.append(observation)
    # The expert is invariant; the asymmetric variant differs between rotated contexts.
    np.testing.assert_allclose(expert(observations[0], rng), expert(observations[1], rng), atol=1e-3)
    assert np.abs(biased(observations[0], rng) - biased(observations[1], rng)).max() > 0.1
    actions = np.array([noisy(observations[0], rng) for _ in range(200)])
    greedy = expert(observations[0], rng)
    random_fraction = np.mean(np.abs(actions - greedy).max(axis=1) > 1e-9)
    assert 0.5 < random_fraction < 0.7  # ε = 0.6
    assert np.all(np.abs(actions) <= 2.0)
    recipe = reach_recipe_policies("mixed", env.robot, env.observation_names, 5)
    assert [p.name for p in recipe] == ["expert"] * 3 + ["suboptimal"] * 2


def test_env_specs_name_their_arm_and_contexts() -> None:
    """A dataset's eval env spec gives its URDF and context sets: a profile's, or the reacher env config's."""
    profile = load_profile("kuka_iiwa")
    iiwa = {"id": ENV_ID, "kwargs": {"robot": "kuka_iiwa"}}
    assert env_urdf(iiwa) == profile.urdf_path and env_contexts(iiwa) == profile.profile.contexts
    reacher = {
        "id": sim.CONTINUOUS_ENV_ID,
        "kwargs": {"config": {"urdf": "reacher_paper.urdf", "contexts": {"train_deg": [30.0]}}},
    }
    assert env_urdf(reacher).name == "reacher_paper.urdf" and env_urdf(reacher).is_file()
    assert env_contexts(reacher).train_deg == (30.0,)
    assert env_urdf({"id": sim.CONTINUOUS_ENV_ID, "kwargs": {}}).name == "reacher.urdf"  # the default config
