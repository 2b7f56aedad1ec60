"""The paper preset (deploy/env/reacher-paper.yaml): the authors' reacher on our PyBullet arm."""

import math
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from pipeline import REPO
from pipeline.io import load_config
from sim.behaviour import make_expert, run_episode
from sim.config import ReacherConfig
from sim.contexts import wrap_angle
from sim.reacher import RotationalReacherDiscreteEnv, RotationalReacherEnv, path_distance
from sim.robot import ASSETS_DIR

PRESET = REPO / "deploy" / "env" / "reacher-paper.yaml"


def paper(**overrides: object) -> ReacherConfig:
    return load_config(PRESET, ReacherConfig).model_copy(update=overrides)


def rotation(theta: float) -> np.ndarray:
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def test_preset_is_the_authors_environment() -> None:
    config = paper()
    env = RotationalReacherDiscreteEnv(config)
    assert env.robot.link_lengths == (0.5, 0.5)
    np.testing.assert_array_equal(env.tau_max, [2.0, 2.0])
    assert (config.control_dt, config.action_repeat, config.max_episode_steps) == (0.05, 12, 200)
    assert (config.goal_distance, config.success_radius, config.success_rule) == (1.0, 0.01, "swept_path")
    assert (config.gravity, config.max_joint_speed, config.distance_shaping) == (0.0, 4.0, 0.0)
    assert config.start_offset_rad == (math.radians(45.0), math.radians(-90.0))
    assert config.urdf.name == "reacher_paper.urdf" and config.urdf.is_file()
    assert ReacherConfig().control_hz == 50  # the default preset is unchanged


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("env_class", [RotationalReacherEnv, RotationalReacherDiscreteEnv])
def test_preset_envs_pass_the_gymnasium_checker(env_class: type[RotationalReacherEnv]) -> None:
    env = env_class(paper())
    try:
        check_env(env)
    finally:
        env.close()


def _handcrafted(config: ReacherConfig, switch: int) -> tuple[int | None, float]:
    """The authors' handcrafted policy on the 9-action grid: (-2, 2) for ``switch`` steps, then (2, 2)."""
    env = RotationalReacherDiscreteEnv(config)
    table = [tuple(row) for row in env.action_table]
    first, then = table.index((-2.0, 2.0)), table.index((2.0, 2.0))
    env.reset(seed=0, options={"context": 0.7})
    closest = math.inf
    for step in range(1, 41):
        _, reward, terminated, _, info = env.step(first if step <= switch else then)
        closest = min(closest, info["path_distance"])
        if terminated:
            assert reward == 1.0
            return step, closest
    return None, closest


@pytest.mark.parametrize("switch", [10, 12, 14])
def test_handcrafted_bang_bang_policy_reaches_the_goal_in_12_to_20_steps(switch: int) -> None:
    """Our joint signs are the authors' (both counter-clockwise positive): their policy, unchanged."""
    steps, _ = _handcrafted(paper(start_noise_deg=0.0), switch)
    assert steps is not None and 12 <= steps <= 20


def test_end_point_rule_misses_what_the_swept_path_catches() -> None:
    """At 20 Hz the hand moves ~0.2 m per step: judged at the step's end only, it flies past the goal."""
    steps, closest = _handcrafted(paper(start_noise_deg=0.0, success_rule="end_point"), 12)
    swept_steps, swept_closest = _handcrafted(paper(start_noise_deg=0.0), 12)
    assert swept_steps is not None and swept_closest <= 0.01
    assert steps is None and closest > 0.01


def test_path_distance_by_hand() -> None:
    goal = np.array([0.0, 0.0])
    # The hand crosses x = 0 at y = 0.006 between two points 0.2 m apart: 0.006 from the goal, the ends ~0.1.
    path = np.array([[-0.1, 0.006], [0.1, 0.006]])
    assert path_distance(goal, path) == pytest.approx(0.006)
    assert min(np.linalg.norm(path, axis=1)) == pytest.approx(math.hypot(0.1, 0.006))
    # Past the segment's end the closest point is that end: (0.3, 0.4) → 0.5.
    assert path_distance(goal, np.array([[0.6, 0.8], [0.3, 0.4]])) == pytest.approx(0.5)
    # A polyline takes its closest segment; one point is its own distance.
    assert path_distance(goal, np.array([[1.0, 1.0], [1.0, 0.0], [0.0, -0.02]])) == pytest.approx(
        0.02 / math.hypot(1, 0.02)
    )
    assert path_distance(goal, np.array([[0.3, -0.4]])) == pytest.approx(0.5)


def test_swept_success_in_the_env_by_hand() -> None:
    """Start 3° short of the goal, turning the straight arm at 3 rad/s: the path crosses the goal mid-step."""
    config = paper(success_radius=0.001, start_noise_deg=0.0)
    env = RotationalReacherEnv(config)
    env.reset(
        seed=0, options={"context": 0.0, "joint_position": [-math.radians(3.0), 0.0], "joint_velocity": [3.0, 0.0]}
    )
    _, reward, terminated, _, info = env.step(np.zeros(2))
    # Zero torque, no damping, no gravity: the shoulder keeps 3 rad/s, 0.15 rad = 8.6° in the step.
    assert info["hand_position"][1] == pytest.approx(math.sin(0.15 - math.radians(3.0)), abs=1e-3)
    assert info["distance"] > 0.09 and info["path_distance"] < 1e-3
    assert (reward, terminated) == (1.0, True)


def test_joint_speed_is_capped() -> None:
    env = RotationalReacherEnv(paper())
    env.reset(seed=0, options={"context": 0.0})
    speeds = [np.abs(env.step(np.array([2.0, 0.0]))[0][2:4]).max() for _ in range(60)]
    assert max(speeds) == pytest.approx(4.0, abs=1e-3)
    free = RotationalReacherEnv(paper(max_joint_speed=None))
    free.reset(seed=0, options={"context": 0.0})
    assert max(np.abs(free.step(np.array([2.0, 0.0]))[0][2:4]).max() for _ in range(60)) > 4.2


@pytest.mark.parametrize("theta", [0.4, 2.0, -2.9])
def test_preset_dynamics_are_rotation_equivariant(theta: float) -> None:
    base, rotated = RotationalReacherEnv(paper()), RotationalReacherEnv(paper())
    obs_a, info_a = base.reset(seed=3, options={"context": 0.0})
    obs_b, info_b = rotated.reset(seed=3, options={"context": theta})
    rng, g = np.random.default_rng(3), rotation(theta)
    for _ in range(60):
        np.testing.assert_allclose(g @ info_a["hand_position"], info_b["hand_position"], atol=1e-9)
        np.testing.assert_allclose(obs_a[1:4], obs_b[1:4], atol=1e-5)
        assert abs(wrap_angle(obs_a[0] + theta - obs_b[0])) < 1e-5
        assert info_a["path_distance"] == pytest.approx(info_b["path_distance"], abs=1e-9)
        torque = rng.uniform(-2.0, 2.0, size=2)
        obs_a, reward_a, term_a, _, info_a = base.step(torque)
        obs_b, reward_b, term_b, _, info_b = rotated.step(torque)
        assert (reward_a, term_a) == (reward_b, term_b)
        if term_a:
            break


def test_new_minimum_shaping_is_the_authors_reward_over_three() -> None:
    """w = 2/3: (1/3)·success + (2/3)·(1 - d/2)/200 = (1/3)·[success + (1 - d/2)/100], paid on new minima only."""
    env = RotationalReacherDiscreteEnv(paper(distance_shaping=2.0 / 3.0, start_noise_deg=0.0))
    _, info = env.reset(seed=0, options={"context": 0.0})
    best, total = info["distance"], 0.0
    rng = np.random.default_rng(0)
    for _ in range(200):
        _, reward, terminated, truncated, info = env.step(int(rng.integers(9)))
        total += float(reward)
        d = info["path_distance"]
        if terminated:
            assert reward == pytest.approx(1.0 / 3.0)
        elif d < best:
            assert reward == pytest.approx((1.0 - d / 2.0) / 100.0 / 3.0)
        else:
            assert reward == 0.0
        best = min(best, d)
        if terminated or truncated:
            break
    assert 0.0 < total <= 1.0


@pytest.mark.parametrize("env_class", [RotationalReacherEnv, RotationalReacherDiscreteEnv])
def test_expert_reaches_in_about_the_handcrafted_time(env_class: type[RotationalReacherEnv]) -> None:
    """The analytic expert with its default gains: 14 steps in the paper preset (46 in the default one)."""
    env = env_class(paper())
    expert, rng = make_expert(env), np.random.default_rng(0)
    angles = env.config.contexts.angles("test")[:8]
    outcomes = [run_episode(env, expert, rng, float(theta), seed) for seed, theta in enumerate(angles)]
    assert all(success for _, _, success in outcomes)
    assert all(12 <= steps <= 20 for _, steps, _ in outcomes)


def test_a_bare_urdf_name_is_a_bundled_asset() -> None:
    assert ReacherConfig.model_validate({"urdf": "reacher_paper.urdf"}).urdf == ASSETS_DIR / "reacher_paper.urdf"
    assert ReacherConfig.model_validate({"urdf": "mine.urdf"}).urdf == Path("mine.urdf")  # not bundled: as given
