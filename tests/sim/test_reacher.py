import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import sim
from sim.contexts import wrap_angle
from sim.reacher import PhysicsSample, RotationalReacherDiscreteEnv, RotationalReacherEnv


def rotation(theta: float) -> np.ndarray:
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("env_id", [sim.CONTINUOUS_ENV_ID, sim.DISCRETE_ENV_ID])
def test_registered_envs_pass_the_gymnasium_checker(env_id: str) -> None:
    env = gym.make(env_id)
    try:
        check_env(env.unwrapped)
    finally:
        env.close()


def test_observation_and_action_components_are_named() -> None:
    env = RotationalReacherEnv()
    assert env.observation_names == (
        "joint_position.shoulder",
        "joint_position.elbow",
        "joint_velocity.shoulder",
        "joint_velocity.elbow",
        "goal_position.x",
        "goal_position.y",
    )
    assert env.action_names == ("joint_effort.shoulder", "joint_effort.elbow")
    assert env.observation_space.shape == (len(env.observation_names),)
    assert env.config.action_repeat == 5


def test_discrete_actions_are_the_nine_torque_pairs() -> None:
    env = RotationalReacherDiscreteEnv()
    table = env.action_table
    assert table.shape == (9, 2)
    assert {tuple(row) for row in table} == {(a, b) for a in (-2.0, 0.0, 2.0) for b in (-2.0, 0.0, 2.0)}
    np.testing.assert_array_equal(env.torque(4), [0.0, 0.0])
    with pytest.raises(ValueError, match=r"discrete action must be in \[0, 9\)"):
        env.torque(9)


def _rollout(env: RotationalReacherEnv, seed: int, steps: int, context: float | None = None) -> list[Any]:
    options = None if context is None else {"context": context}
    observation, _ = env.reset(seed=seed, options=options)
    rng = np.random.default_rng(seed)
    trajectory = [observation]
    for _ in range(steps):
        observation, reward, terminated, truncated, _ = env.step(rng.uniform(-2, 2, 2))
        trajectory.append(np.append(observation, [float(reward), terminated, truncated]))
        if terminated or truncated:
            break
    return trajectory


def _same(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    "config",
    [
        {},
        {
            "randomization": {
                "link_mass_scale": (0.5, 1.5),
                "joint_friction": (0.0, 0.3),
                "action_latency_steps": (0, 3),
                "observation_noise_std": 0.01,
            }
        },
    ],
    ids=["nominal", "randomized"],
)
def test_same_seed_same_trajectory(config: dict[str, Any]) -> None:
    first, second = RotationalReacherEnv(config), RotationalReacherEnv(config)
    _rollout(first, seed=99, steps=30)  # history must not matter
    assert _same(_rollout(first, seed=7, steps=60), _rollout(second, seed=7, steps=60))
    assert not _same(_rollout(first, seed=7, steps=60), _rollout(second, seed=8, steps=60))


def test_reset_draws_contexts_from_the_configured_set() -> None:
    env = RotationalReacherEnv({"contexts": {"train_deg": (0.0, 90.0)}})
    seen = {round(math.degrees(env.reset(seed=s)[1]["context"])) for s in range(20)}
    assert seen == {0, 90}
    env = RotationalReacherEnv({"reset_context_set": "test"})
    assert env.reset(seed=0)[1]["context"] in env.config.contexts.angles("test")


@settings(max_examples=10, deadline=None)
@given(theta=st.floats(-math.pi, math.pi), seed=st.integers(0, 2**16))
def test_dynamics_are_rotation_equivariant(theta: float, seed: int) -> None:
    """Rotating the context and applying the same torques rotates the whole trajectory."""
    base, rotated = RotationalReacherEnv(), RotationalReacherEnv()
    obs_a, info_a = base.reset(seed=seed, options={"context": 0.0})
    obs_b, info_b = rotated.reset(seed=seed, options={"context": theta})
    rng, g = np.random.default_rng(seed), rotation(theta)
    for _ in range(80):
        np.testing.assert_allclose(g @ info_a["hand_position"], info_b["hand_position"], atol=1e-9)
        np.testing.assert_allclose(g @ info_a["elbow_position"], info_b["elbow_position"], atol=1e-9)
        np.testing.assert_allclose(g @ obs_a[4:6], obs_b[4:6], atol=1e-6)  # goal
        np.testing.assert_allclose(obs_a[1:4], obs_b[1:4], atol=1e-5)  # elbow angle and velocities: invariant
        assert abs(wrap_angle(obs_a[0] + theta - obs_b[0])) < 1e-5  # shoulder: shifted by θ
        torque = rng.uniform(-2.0, 2.0, size=2)
        obs_a, reward_a, term_a, trunc_a, info_a = base.step(torque)
        obs_b, reward_b, term_b, trunc_b, info_b = rotated.step(torque)
        assert (reward_a, term_a, trunc_a) == (reward_b, term_b, trunc_b)
        if term_a:
            break


def test_fixed_start_mode_keeps_start_joints_and_rotates_the_goal() -> None:
    env = RotationalReacherEnv({"start_mode": "fixed", "start_noise_deg": 0.0})
    obs_0, _ = env.reset(seed=0, options={"context": 0.0})
    obs_1, _ = env.reset(seed=0, options={"context": 1.0})
    np.testing.assert_allclose(obs_0[:4], obs_1[:4])
    np.testing.assert_allclose(rotation(1.0) @ obs_0[4:6], obs_1[4:6], atol=1e-6)


def test_time_limit_truncates() -> None:
    env = RotationalReacherEnv({"max_episode_steps": 20})
    env.reset(seed=0, options={"context": 0.0})
    for step in range(1, 21):
        _, reward, terminated, truncated, _ = env.step(np.zeros(2))
        assert reward == 0.0 and not terminated
        assert truncated == (step == 20)


def test_success_terminates_with_reward_one() -> None:
    # Start with the hand on the goal: the first step succeeds.
    env = RotationalReacherEnv(
        {"goal_distance": 1.0, "start_shoulder_offset_deg": 0.0, "start_elbow_deg": 0.0, "start_noise_deg": 0.0}
    )
    env.reset(seed=0, options={"context": 0.3})
    _, reward, terminated, truncated, info = env.step(np.zeros(2))
    assert (reward, terminated, truncated, info["is_success"]) == (1.0, True, False, True)


def test_shaped_return_stays_at_most_one() -> None:
    env = RotationalReacherEnv({"distance_shaping": 0.5})
    from sim.behaviour import make_expert

    expert, rng = make_expert(env), np.random.default_rng(0)
    observation, _ = env.reset(seed=0, options={"context": 2.0})
    total, done = 0.0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(expert(observation, rng))
        total += float(reward)
        done = terminated or truncated
    assert terminated and 0.9 < total <= 1.0


def test_action_latency_delays_the_applied_torque() -> None:
    env = RotationalReacherEnv({"randomization": {"action_latency_steps": (2, 2)}})
    env.reset(seed=0, options={"context": 0.0})
    applied = [env.step(np.full(2, float(k + 1)))[4]["applied_torque"] for k in range(4)]
    np.testing.assert_array_equal(np.array(applied)[:, 0], [0.0, 0.0, 1.0, 2.0])


def test_joint_friction_holds_small_torques() -> None:
    env = RotationalReacherEnv({"randomization": {"joint_friction": (1.0, 1.0)}})
    env.reset(seed=0, options={"context": 0.0})
    for _ in range(10):
        observation, *_ = env.step(np.array([0.9, -0.9]))
    np.testing.assert_allclose(observation[2:4], 0.0, atol=1e-3)  # static friction: (almost) stuck
    observation, *_ = env.step(np.array([1.5, 0.0]))
    assert observation[2] > 0.01


def test_heavier_links_move_slower() -> None:
    speeds = []
    for scale in (1.0, 2.0):
        env = RotationalReacherEnv({"randomization": {"link_mass_scale": (scale, scale)}})
        env.reset(seed=0, options={"context": 0.0})
        observation, *_ = env.step(np.array([2.0, 0.0]))
        speeds.append(observation[2])
    assert speeds[1] < 0.75 * speeds[0]


def test_observation_noise_perturbs_joints_only() -> None:
    clean, noisy = RotationalReacherEnv(), RotationalReacherEnv({"randomization": {"observation_noise_std": 0.05}})
    obs_clean, info_clean = clean.reset(seed=0, options={"context": 0.0})
    obs_noisy, info_noisy = noisy.reset(seed=0, options={"context": 0.0})
    assert not np.allclose(obs_clean[:4], obs_noisy[:4])
    np.testing.assert_array_equal(obs_clean[4:], obs_noisy[4:])
    np.testing.assert_array_equal(info_clean["hand_position"], info_noisy["hand_position"])


def test_physics_listener_sees_every_physics_step() -> None:
    env = RotationalReacherEnv()
    samples: list[PhysicsSample] = []
    env.add_physics_listener(samples.append)
    env.reset(seed=0, options={"context": 0.0})
    env.step(np.array([1.0, -1.0]))
    assert [s.physics_step for s in samples] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(samples[-1].joint_effort, [1.0, -1.0])
    np.testing.assert_array_equal(samples[-1].joint_position, env.joint_state().joint_position)


def test_rgb_render_shows_the_scene() -> None:
    env = RotationalReacherEnv(render_mode="rgb_array")
    env.reset(seed=0, options={"context": 0.0})
    image = env.render()
    assert image is not None and image.shape == (240, 240, 3) and image.dtype == np.uint8
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 3


def test_invalid_configs_are_rejected_with_the_field_named() -> None:
    with pytest.raises(ValidationError, match="not an integer multiple of control_hz"):
        RotationalReacherEnv({"physics_hz": 240, "control_hz": 50})
    with pytest.raises(ValidationError, match="joint_friction"):
        RotationalReacherEnv({"randomization": {"joint_friction": (0.5, 0.1)}})
    with pytest.raises(ValidationError, match="unknown_field"):
        RotationalReacherEnv({"unknown_field": 1})
    with pytest.raises(ValueError, match="render_mode"):
        RotationalReacherEnv(render_mode="human")


def test_step_before_reset_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        RotationalReacherEnv().step(np.zeros(2))


def test_reset_can_start_from_a_given_joint_state() -> None:
    env = RotationalReacherEnv()
    observation, _ = env.reset(
        seed=0, options={"context": 1.0, "joint_position": [0.3, -0.4], "joint_velocity": [1.5, -2.0]}
    )
    np.testing.assert_allclose(observation[:4], [0.3, -0.4, 1.5, -2.0], atol=1e-6)
    np.testing.assert_allclose(observation[4:], 0.7 * np.array([math.cos(1.0), math.sin(1.0)]), atol=1e-6)
