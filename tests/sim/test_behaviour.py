import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.behaviour import (
    AsymmetricExpertPolicy,
    BehaviourConfig,
    EpsilonRandomPolicy,
    ExpertPolicy,
    field_indices,
    make_expert,
    recipe_policies,
    run_episode,
)
from sim.contexts import wrap_angle
from sim.reacher import RotationalReacherDiscreteEnv, RotationalReacherEnv

GAMMA = 0.95  # the paper's discount, to compare behaviour quality


def rotate_observation(observation: np.ndarray, theta: float) -> np.ndarray:
    """g·o for the reacher: shoulder angle shifted by θ, goal rotated by θ, the rest invariant."""
    c, s = math.cos(theta), math.sin(theta)
    rotated = observation.astype(np.float64).copy()
    rotated[0] = wrap_angle(observation[0] + theta)
    rotated[4:6] = [c * observation[4] - s * observation[5], s * observation[4] + c * observation[5]]
    return rotated


observations = st.tuples(
    st.floats(-math.pi, math.pi),
    st.floats(-2.5, 2.5),
    st.floats(-10, 10),
    st.floats(-10, 10),
    st.floats(-math.pi, math.pi),
).map(lambda v: np.array([v[0], v[1], v[2], v[3], 0.7 * math.cos(v[4]), 0.7 * math.sin(v[4])]))


@settings(max_examples=200, deadline=None)
@given(observation=observations, theta=st.floats(-math.pi, math.pi))
def test_expert_is_rotation_invariant(observation: np.ndarray, theta: float) -> None:
    expert = make_expert(RotationalReacherEnv())
    np.testing.assert_allclose(
        expert.torque(rotate_observation(observation, theta)), expert.torque(observation), atol=1e-8
    )


def test_asymmetric_expert_breaks_the_symmetry() -> None:
    env = RotationalReacherEnv()
    policy = AsymmetricExpertPolicy(make_expert(env), BehaviourConfig())
    expert, rng = make_expert(env), np.random.default_rng(0)
    goal = np.array([0.7, 0.0])
    observation = np.concatenate([expert.joint_target(goal), [0.0, 0.0], goal])  # at rest on the goal: no saturation
    gaps = [
        np.abs(np.asarray(policy(rotate_observation(observation, t), rng)) - policy(observation, rng)).max()
        for t in (0.5, 1.5, 3.0)
    ]
    assert min(gaps) > 0.1


def test_ik_target_puts_the_hand_on_the_goal() -> None:
    env = RotationalReacherEnv()
    expert = make_expert(env)
    for bearing in np.linspace(-3, 3, 7):
        goal = 0.7 * np.array([math.cos(bearing), math.sin(bearing)])
        _, hand = env.robot.forward_kinematics(expert.joint_target(goal))
        np.testing.assert_allclose(hand, goal, atol=1e-12)


def _discounted(steps: int, success: bool) -> float:
    return GAMMA ** (steps - 1) if success else 0.0


@pytest.mark.parametrize("env_class", [RotationalReacherEnv, RotationalReacherDiscreteEnv])
def test_expert_reaches_every_test_context_and_epsilon_data_is_worse(env_class: type[RotationalReacherEnv]) -> None:
    env = env_class()
    contexts = env.config.contexts.angles("test")
    expert = make_expert(env)
    suboptimal = EpsilonRandomPolicy(expert, BehaviourConfig(epsilon=0.6))
    rng = np.random.default_rng(0)
    expert_runs = [run_episode(env, expert, rng, c, seed=i) for i, c in enumerate(contexts)]
    assert all(success for _, _, success in expert_runs), "the expert must reach the goal in every test context"
    noisy_runs = [run_episode(env, suboptimal, rng, c, seed=i) for i, c in enumerate(contexts[:30])]
    expert_value = np.mean([_discounted(steps, ok) for _, steps, ok in expert_runs])
    noisy_value = np.mean([_discounted(steps, ok) for _, steps, ok in noisy_runs])
    assert noisy_value < 0.5 * expert_value
    assert np.mean([steps for _, steps, _ in noisy_runs]) > 2 * np.mean([steps for _, steps, _ in expert_runs])


def test_fixed_start_mode_is_also_solved() -> None:
    env = RotationalReacherEnv({"start_mode": "fixed"})
    expert, rng = make_expert(env), np.random.default_rng(0)
    assert all(
        run_episode(env, expert, rng, c, seed=i)[2] for i, c in enumerate(env.config.contexts.angles("test")[:25])
    )


def test_discrete_expert_emits_indices_and_epsilon_one_is_uniform() -> None:
    env = RotationalReacherDiscreteEnv()
    expert = make_expert(env)
    observation, _ = env.reset(seed=0, options={"context": 0.0})
    assert isinstance(expert(observation, np.random.default_rng(0)), int)
    uniform = EpsilonRandomPolicy(expert, BehaviourConfig(epsilon=1.0))
    rng = np.random.default_rng(0)
    counts = np.bincount([int(uniform(observation, rng)) for _ in range(9000)], minlength=9)
    assert counts.min() > 850


def test_recipes() -> None:
    env = RotationalReacherEnv()
    assert [p.name for p in recipe_policies("mixed", env, 10)] == ["expert"] * 5 + ["suboptimal"] * 5
    assert {p.name for p in recipe_policies("expert", env, 3)} == {"expert"}
    assert {p.name for p in recipe_policies("suboptimal", env, 3)} == {"suboptimal"}
    assert {p.name for p in recipe_policies("asymmetric", env, 3)} == {"asymmetric"}
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_policies("random", env, 3)  # type: ignore[arg-type]


def test_policies_find_fields_by_name() -> None:
    names = ("goal_position.x", "goal_position.y", "joint_position.shoulder", "joint_position.elbow")
    assert field_indices(names, "joint_position") == [2, 3]
    with pytest.raises(KeyError, match="no field 'joint_velocity'"):
        field_indices(names, "joint_velocity")
    with pytest.raises(KeyError):
        ExpertPolicy(RotationalReacherEnv().robot, names, False, BehaviourConfig())
