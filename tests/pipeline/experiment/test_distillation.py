"""Table 1's targets: symmetric ones are C4-invariant, asymmetric ones are not, both have η_max = η."""

import math

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.experiment.distillation import (
    asymmetric_target,
    c4_index,
    expert_action_values,
    pessimism_amount,
    pessimistic_target,
    symmetric_target,
)
from sim import DISCRETE_ENV_ID
from sim.behaviour import make_expert
from sim.config import ReacherConfig

NAMES = (
    "joint_position.shoulder",
    "joint_position.elbow",
    "joint_velocity.shoulder",
    "joint_velocity.elbow",
    "goal_position.x",
    "goal_position.y",
)
ETAS = st.sampled_from([0.01, 0.1, 1.0, 10.0])
# Action values of 5 states x 9 actions in [0, 1], with distinct values so every state has suboptimal actions.
Q_VALUES = arrays(np.float64, (5, 9), elements=st.floats(0.0, 1.0))
# The expert's action in each of the 5 states.
GREEDY = arrays(np.int64, (5,), elements=st.integers(0, 8))


def rotate(observations: np.ndarray, quarter_turns: int) -> np.ndarray:
    """The C4 element g = quarter_turns x 90 deg acting on raw observations (shoulder angle and goal)."""
    angle = quarter_turns * math.pi / 2
    moved = observations.copy()
    moved[:, 0] = (moved[:, 0] + angle + math.pi) % (2 * math.pi) - math.pi
    c, s = math.cos(angle), math.sin(angle)
    x, y = observations[:, 4].copy(), observations[:, 5].copy()
    moved[:, 4], moved[:, 5] = c * x - s * y, s * x + c * y
    return moved


def states(bearings_deg: list[float]) -> np.ndarray:
    rng = np.random.default_rng(0)
    bearings = np.radians(bearings_deg)
    joints = rng.uniform(-1.0, 1.0, size=(len(bearings), 4))
    return np.column_stack([joints, 0.7 * np.cos(bearings), 0.7 * np.sin(bearings)])


@given(st.floats(-44.0, 44.0), st.integers(0, 3))
def test_c4_index_is_the_nearest_quarter_turn(offset: float, k: int) -> None:
    observation = states([90.0 * k + offset])
    assert c4_index(observation, NAMES).tolist() == [k]
    assert c4_index(rotate(observation, 1), NAMES).tolist() == [(k + 1) % 4]


@settings(max_examples=50, deadline=None)
@given(Q_VALUES, ETAS, GREEDY, st.integers(1, 3))
def test_symmetric_target_is_c4_invariant_with_the_stated_eta_max(
    q: np.ndarray, eta: float, greedy: np.ndarray, turns: int
) -> None:
    observations = states([0.0, 90.0, 180.0, 270.0, 10.0])
    # Q and the expert's action are C4-invariant (dynamics and expert are symmetric, tested below),
    # so g·s carries the same values and greedy action.
    target = pessimistic_target("symmetric", q, eta, greedy, observations, NAMES)
    assert np.array_equal(target, pessimistic_target("symmetric", q, eta, greedy, rotate(observations, turns), NAMES))
    assert np.array_equal(target, symmetric_target(q, eta, greedy))
    assert pessimism_amount(q, target) == pytest.approx(eta)
    rows = np.arange(len(q))
    assert np.array_equal(target[rows, greedy], q[rows, greedy])  # the greedy action is never penalised
    assert np.allclose(np.delete(q - target, greedy + 9 * rows), eta)  # every other action is, by η


@settings(max_examples=50, deadline=None)
@given(Q_VALUES, ETAS, GREEDY, st.integers(1, 3))
def test_asymmetric_target_changes_under_c4_with_the_same_eta_max(
    q: np.ndarray, eta: float, greedy: np.ndarray, turns: int
) -> None:
    observations = states([0.0, 90.0, 180.0, 270.0, 10.0])
    target = pessimistic_target("asymmetric", q, eta, greedy, observations, NAMES)
    moved = pessimistic_target("asymmetric", q, eta, greedy, rotate(observations, turns), NAMES)
    assert np.array_equal(target, asymmetric_target(q, eta, greedy, c4_index(observations, NAMES)))
    assert not np.array_equal(target, moved)  # the penalty pattern rotates among the suboptimal actions
    assert pessimism_amount(q, target) == pytest.approx(eta)
    rows = np.arange(len(q))
    assert np.array_equal(target[rows, greedy], q[rows, greedy])
    assert np.all(target <= q) and np.all(target >= q - eta)


def test_asymmetric_penalty_rotates_with_the_context() -> None:
    q = np.zeros((4, 9))
    greedy = np.full(4, 8)
    penalised = q - asymmetric_target(q, 1.0, greedy, np.arange(4)) > 0
    assert penalised.tolist()[0] == [True, True, False, False, True, True, False, False, False]
    assert np.array_equal(np.roll(penalised[0, :8], 1), penalised[1, :8])  # one action further per quarter turn


def test_expert_action_values_are_measured_in_pybullet_and_c4_invariant() -> None:
    env_config = ReacherConfig(contexts={"train_deg": (0.0, 90.0, 180.0, 270.0)})
    spec = {"id": DISCRETE_ENV_ID, "kwargs": {"config": env_config.model_dump(mode="json")}}
    env = gym.make(DISCRETE_ENV_ID, config=env_config)
    expert = make_expert(env.unwrapped)  # type: ignore[arg-type]
    observation, _ = env.reset(seed=3, options={"context": 0.0})
    trajectory = [observation]
    for _ in range(12):
        observation, *_ = env.step(expert(observation, np.random.default_rng()))
        trajectory.append(observation)
    remaining = 0  # steps from the last recorded state to the goal under the expert
    done = False
    while not done:
        observation, _, done, truncated, _ = env.step(expert(observation, np.random.default_rng()))
        remaining += 1
        assert not truncated
    env.close()
    observations = np.asarray(trajectory[-3:], dtype=np.float32)
    q = expert_action_values(observations, NAMES, spec, 0.95)
    assert q.shape == (3, 9) and np.all((q >= 0) & (q <= 1))
    # The expert's own action from the last state reaches the goal in `remaining` steps, as the episode did.
    own = int(expert(observations[-1], np.random.default_rng()))
    assert q[-1, own] == pytest.approx(0.95 ** (remaining - 1))
    assert q[-1, own] == q[-1].max()
    rotated = expert_action_values(rotate(observations.astype(np.float64), 1).astype(np.float32), NAMES, spec, 0.95)
    np.testing.assert_allclose(rotated, q, atol=1e-12)  # same step counts after a quarter turn
    chosen = np.array([0, 4, own])  # one action per state: just those pairs, the same values
    np.testing.assert_array_equal(
        expert_action_values(observations, NAMES, spec, 0.95, actions=chosen), q[[0, 1, 2], chosen]
    )
