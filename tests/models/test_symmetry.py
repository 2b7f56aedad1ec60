import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.symmetry import (
    BoundSymmetry,
    GroupElement,
    SymmetrySpec,
    SymmetrySpecError,
    check_group_laws,
    wrap_angle,
)
from pipeline.io import ConfigError, load_config
from sim.contexts import wrap_angle as wrap_np
from sim.reacher import RotationalReacherDiscreteEnv, RotationalReacherEnv
from tests.sim.test_behaviour import observations, rotate_observation

REPO = Path(__file__).resolve().parents[2]
REACHER_YAML = REPO / "deploy/symmetry/reacher.yaml"
ENV = RotationalReacherEnv()
DISCRETE_ENV = RotationalReacherDiscreteEnv()
OBS, ACT = ENV.observation_names, ENV.action_names


def mirror_spec_dict(**observation_overrides: Any) -> dict[str, Any]:
    """The reacher under O(2): rotation plus the mirror across the base x axis (every angle and torque flips)."""
    observation: dict[str, Any] = {
        "joint_position": [
            {"transform": "angle_shift", "components": ["shoulder"]},
            {"transform": "permute_sign", "components": ["elbow"], "sign": -1},
        ],
        "joint_velocity": {"transform": "permute_sign", "sign": [-1, -1]},
        "goal_position": {"transform": "rotate2d", "components": ["x", "y"]},
    }
    observation.update(observation_overrides)
    return {
        "groups": ["rotation", "mirror"],
        "observation": observation,
        "action": {"joint_effort": {"transform": "permute_sign", "sign": [-1, -1]}},
    }


REACHER = load_config(REACHER_YAML, SymmetrySpec)
ROTATION = REACHER.bind(OBS, ACT)
O2 = SymmetrySpec.model_validate(mirror_spec_dict()).bind(OBS, ACT)
O2_DISCRETE = SymmetrySpec.model_validate(mirror_spec_dict()).bind(OBS, ACT, DISCRETE_ENV.action_table)


def angular_close(a: np.ndarray, b: np.ndarray, names: tuple[str, ...], angles: tuple[str, ...], atol: float) -> None:
    """Assert a ≈ b, comparing angle components on the circle."""
    is_angle = np.array([n in angles for n in names])
    gap = np.where(is_angle, wrap_np(np.asarray(a) - np.asarray(b)), np.asarray(a) - np.asarray(b))
    assert np.abs(gap).max() <= atol, f"max gap {np.abs(gap).max()} at {names[int(np.abs(gap).max(axis=0).argmax())]}"


angles = st.floats(-10.0, 10.0, allow_nan=False)
elements = st.tuples(angles, st.booleans())


def element(value: tuple[float, bool]) -> GroupElement:
    return GroupElement.of(value[0], value[1])


# ----------------------------------------------------------------------------- the reacher spec
def test_yaml_is_the_documented_reacher_spec() -> None:
    assert REACHER.groups == ("rotation",)
    assert (REACHER.rotation.sampling, REACHER.rotation.order) == ("cyclic", 4)
    assert ROTATION.observation_angle_names == ("joint_position.shoulder",)
    assert ROTATION.actions_invariant and not O2.actions_invariant
    assert ROTATION.rotate2d_indices("goal_position") == (OBS.index("goal_position.x"), OBS.index("goal_position.y"))


@settings(max_examples=200, deadline=None)
@given(observation=observations, theta=st.floats(-math.pi, math.pi))
def test_reacher_spec_matches_the_hand_written_rotation(observation: np.ndarray, theta: float) -> None:
    angular_close(
        ROTATION.act_observation_np(observation, theta),
        rotate_observation(observation, theta),
        OBS,
        ROTATION.observation_angle_names,
        1e-12,
    )
    np.testing.assert_array_equal(ROTATION.act_action_np([0.3, -1.2], theta), [0.3, -1.2])  # torques invariant


@settings(max_examples=100, deadline=None)
@given(observation=observations, g=elements)
def test_the_hand_rotates_and_mirrors_with_the_goal(observation: np.ndarray, g: tuple[float, bool]) -> None:
    theta, mirror = g
    moved = O2.act_observation_np(observation, theta, mirror)
    _, hand = ENV.robot.forward_kinematics(observation[:2])
    _, moved_hand = ENV.robot.forward_kinematics(moved[:2])
    c, s = math.cos(theta), math.sin(theta)
    expected = np.array([[c, -s], [s, c]]) @ (hand * ([1.0, -1.0] if mirror else [1.0, 1.0]))
    np.testing.assert_allclose(moved_hand, expected, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(moved_hand - moved[4:6]), np.linalg.norm(hand - observation[4:6]))


def test_reacher_spec_matches_the_simulator() -> None:
    """Context θ + α is the exact rotation of context θ: its observations are g(α)·those of context θ."""
    env = RotationalReacherEnv()
    for theta, alpha in ((0.0, 0.7), (1.0, -2.5), (-3.0, math.pi / 2)):
        first, _ = env.reset(seed=3, options={"context": theta})
        torques = np.random.default_rng(0).uniform(-2, 2, size=(10, 2))
        trajectory = [first] + [env.step(t)[0] for t in torques]
        second, _ = env.reset(seed=3, options={"context": theta + alpha})
        rotated = [second] + [env.step(ROTATION.act_action_np(t, alpha))[0] for t in torques]
        for o, o_rotated in zip(trajectory, rotated, strict=True):
            angular_close(ROTATION.act_observation_np(o, alpha), o_rotated, OBS, ROTATION.observation_angle_names, 1e-5)


# ----------------------------------------------------------------------------- group laws
@settings(max_examples=150, deadline=None)
@given(observation=observations, g=elements, h=elements)
def test_group_laws(observation: np.ndarray, g: tuple[float, bool], h: tuple[float, bool]) -> None:
    o = torch.from_numpy(observation)
    ge, he = element(g), element(h)
    names, angle_names = O2.observation_names, O2.observation_angle_names

    def close(a: torch.Tensor, b: torch.Tensor) -> None:
        angular_close(a.numpy(), b.numpy(), names, angle_names, 1e-9)

    close(O2.act_observation(o, GroupElement.identity(dtype=torch.float64)), o)
    close(O2.act_observation(O2.act_observation(o, ge), O2.invert(ge)), o)
    close(O2.act_observation(O2.act_observation(o, O2.invert(ge)), ge), o)
    close(O2.act_observation(O2.act_observation(o, he), ge), O2.act_observation(o, O2.compose(ge, he)))
    mirror = GroupElement.of(0.0, True)
    close(O2.act_observation(O2.act_observation(o, mirror), mirror), o)
    identity = O2.compose(ge, O2.invert(ge))
    assert abs(float(identity.angle)) < 1e-12 and not bool(identity.mirror)


@settings(max_examples=100, deadline=None)
@given(g=elements, h=elements, k=elements)
def test_composition_is_associative(g: tuple[float, bool], h: tuple[float, bool], k: tuple[float, bool]) -> None:
    a, b, c = element(g), element(h), element(k)
    left, right = O2.compose(O2.compose(a, b), c), O2.compose(a, O2.compose(b, c))
    assert abs(float(wrap_angle(left.angle - right.angle))) < 1e-12
    assert bool(left.mirror) == bool(right.mirror)


def test_mirror_acts_on_every_field_as_declared() -> None:
    o = np.array([0.4, 0.9, 1.5, -2.0, 0.3, 0.6])
    np.testing.assert_allclose(O2.act_observation_np(o, 0.0, True), [-0.4, -0.9, -1.5, 2.0, 0.3, -0.6])
    np.testing.assert_allclose(O2.act_action_np([1.0, -2.0], 0.3, True), [-1.0, 2.0])
    # mirror first, then rotate
    np.testing.assert_allclose(
        O2.act_observation_np(o, 0.5, True), O2.act_observation_np(O2.act_observation_np(o, 0.0, True), 0.5)
    )


def test_batched_action_broadcasts_and_keeps_dtype() -> None:
    generator = torch.Generator().manual_seed(0)
    obs = torch.randn(3, 5, 6)
    g = O2.sample((3, 5), generator, full_group=True)
    moved = O2.act_observation(obs, g)
    assert moved.shape == (3, 5, 6) and moved.dtype == torch.float32
    for i in range(3):
        for j in range(5):
            single = O2.act_observation(obs[i, j], GroupElement(g.angle[i, j], g.mirror[i, j]))
            torch.testing.assert_close(moved[i, j], single)
    shared = GroupElement(g.angle[0], g.mirror[0])  # shape (5,) broadcast over the leading 3
    torch.testing.assert_close(O2.act_observation(obs, shared)[2], O2.act_observation(obs[2], shared))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 6\)"):
        O2.act_observation(torch.zeros(4, 5), shared)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_acts_on_cuda_tensors() -> None:
    generator = torch.Generator(device="cuda").manual_seed(0)
    g = O2_DISCRETE.sample((64,), generator, full_group=True)
    obs = torch.randn(64, 6, device="cuda")
    moved = O2_DISCRETE.act_observation(obs, g)
    assert moved.device.type == "cuda"
    cpu = O2_DISCRETE.act_observation(obs.cpu(), GroupElement(g.angle.cpu(), g.mirror.cpu()))
    torch.testing.assert_close(moved.cpu(), cpu)
    indices = torch.arange(9, device="cuda").repeat(8)
    assert O2_DISCRETE.act_discrete_action(indices, g).device.type == "cuda"


def test_law_checker_catches_a_broken_implementation() -> None:
    broken = SymmetrySpec.model_validate(mirror_spec_dict()).bind(OBS, ACT)
    broken._obs_sign[OBS.index("joint_velocity.elbow")] = 2.0  # neither orthogonal nor an involution
    with pytest.raises(SymmetrySpecError, match="observation: .*law violated.*joint_velocity.elbow"):
        check_group_laws(broken)
    broken = SymmetrySpec.model_validate(mirror_spec_dict()).bind(OBS, ACT)
    broken._obs_sine[OBS.index("goal_position.y")] = -1.0  # rotates y the wrong way
    with pytest.raises(SymmetrySpecError, match="observation"):
        check_group_laws(broken)


# ----------------------------------------------------------------------------- sampling
@settings(max_examples=20, deadline=None)
@given(order=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_cyclic_sampling_draws_multiples_of_2pi_over_n(order: int, seed: int) -> None:
    spec = REACHER.model_copy(update={"rotation": REACHER.rotation.model_copy(update={"order": order})})
    bound = spec.bind(OBS, ACT)
    g = bound.sample((400,), torch.Generator().manual_seed(seed), dtype=torch.float64)
    steps = g.angle / (2 * math.pi / order)
    np.testing.assert_allclose(steps, torch.round(steps), atol=1e-9)
    assert set(torch.round(steps).long().remainder(order).tolist()) == set(range(order))
    assert not g.mirror.any()
    assert ((g.angle >= -math.pi) & (g.angle < math.pi)).all()


def test_full_group_sampling_covers_the_circle_and_mirror() -> None:
    g = O2.sample((20_000,), torch.Generator().manual_seed(0), full_group=True)
    counts = np.histogram(g.angle.numpy(), bins=36, range=(-math.pi, math.pi))[0]
    assert counts.min() > 0.8 * 20_000 / 36 and counts.max() < 1.2 * 20_000 / 36
    assert 0.45 < g.mirror.float().mean() < 0.55
    cyclic = O2.sample((1000,), torch.Generator().manual_seed(0))
    assert len(torch.unique(cyclic.angle)) == 4


def test_continuous_sampling_and_mirror_only_groups() -> None:
    continuous = SymmetrySpec.model_validate({**mirror_spec_dict(), "rotation": {"sampling": "continuous"}})
    g = continuous.bind(OBS, ACT).sample((1000,), torch.Generator().manual_seed(0))
    assert len(torch.unique(g.angle)) == 1000
    mirror_only = SymmetrySpec.model_validate({**mirror_spec_dict(), "groups": ["mirror"]}).bind(OBS, ACT)
    g = mirror_only.sample((1000,), torch.Generator().manual_seed(0), full_group=True)
    assert (g.angle == 0).all() and 0 < g.mirror.sum() < 1000


# ----------------------------------------------------------------------------- discrete actions
def test_discrete_actions_map_to_the_index_of_the_transformed_torques() -> None:
    table = DISCRETE_ENV.action_table
    indices = np.arange(9)
    for i, j in zip(indices, O2_DISCRETE.act_discrete_action_np(indices, 0.7, True), strict=True):
        np.testing.assert_array_equal(table[j], -table[i])
    np.testing.assert_array_equal(O2_DISCRETE.act_discrete_action_np(indices, 2.1, False), indices)
    rotation = REACHER.bind(OBS, ACT, table)
    np.testing.assert_array_equal(rotation.act_discrete_action_np(indices, 1.3), indices)
    batch = torch.arange(9).reshape(3, 3)
    g = GroupElement.of(np.zeros((3, 3)), np.eye(3, dtype=bool))
    np.testing.assert_array_equal(
        O2_DISCRETE.act_discrete_action(batch, g).numpy(), np.where(np.eye(3, dtype=bool), 8 - batch.numpy(), batch)
    )


def test_discrete_table_must_be_closed_under_the_group() -> None:
    spec = SymmetrySpec.model_validate(mirror_spec_dict())
    lopsided = np.array([[0.0, 0.0], [2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]])  # no (0, -2)
    with pytest.raises(SymmetrySpecError, match=r"not closed under the group.*\[-0\.0, -2\.0\]|not closed"):
        spec.bind(OBS, ACT, lopsided)
    rotating = mirror_spec_dict()
    rotating["action"] = {"joint_effort": "rotate2d"}
    with pytest.raises(SymmetrySpecError, match="continuous rotation"):
        SymmetrySpec.model_validate(rotating).bind(OBS, ACT, DISCRETE_ENV.action_table)
    with pytest.raises(SymmetrySpecError, match=r"shape \(n_actions, 2\)"):
        spec.bind(OBS, ACT, np.zeros((9, 3)))
    with pytest.raises(SymmetrySpecError, match="discrete_action_table"):
        O2.act_discrete_action(torch.tensor([0]), GroupElement.of(0.0, True))


# ----------------------------------------------------------------------------- invalid specs
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"goal_position": "invariant", "goal": "invariant"}, "observation field 'goal' is unknown"),
        (
            {"joint_position": [{"transform": "angle_shift", "components": ["shoulder", "wrist"]}]},
            "observation field 'joint_position': unknown component 'wrist'",
        ),
        (
            {"joint_position": [{"transform": "angle_shift", "components": ["shoulder"]}]},
            "observation field 'joint_position': component 'elbow' is not covered",
        ),
        (
            {
                "joint_position": [
                    {"transform": "angle_shift", "components": ["shoulder"]},
                    {"transform": "permute_sign", "components": ["elbow", "shoulder"], "sign": [-1, -1]},
                ]
            },
            "observation field 'joint_position': component 'shoulder' is covered twice",
        ),
        (
            {"joint_velocity": [{"transform": "invariant"}, {"transform": "invariant", "components": ["elbow"]}]},
            "observation field 'joint_velocity': a invariant rule without components covers the whole field",
        ),
        (
            {"goal_position": {"transform": "rotate2d", "components": ["x"]}},
            "observation field 'goal_position': rotate2d needs exactly 2 components",
        ),
        (
            {"joint_velocity": {"transform": "permute_sign", "mirror_to": ["elbow", "shoulder"], "sign": [1, -1]}},
            "observation field 'joint_velocity': permute_sign is not an involution",
        ),
        (
            {"joint_velocity": {"transform": "permute_sign", "sign": [-1, 2]}},
            "observation field 'joint_velocity': permute_sign sign of 'elbow' is 2.0; it must be \\+1 or -1",
        ),
        (
            {"joint_velocity": {"transform": "permute_sign", "mirror_to": ["elbow", "elbow"], "sign": [1, 1]}},
            "not a permutation",
        ),
        (
            {"joint_velocity": {"transform": "permute_sign", "sign": [-1]}},
            "permute_sign has 1 signs for 2 components",
        ),
    ],
)
def test_invalid_specs_are_rejected_naming_the_field(change: dict[str, Any], message: str) -> None:
    data = mirror_spec_dict(**change)
    if "goal" in change:
        del data["observation"]["goal_position"]
    with pytest.raises((SymmetrySpecError, ValidationError), match=message):
        SymmetrySpec.model_validate(data).bind(OBS, ACT)


def test_invalid_specs_fail_at_load_time_when_names_are_not_needed() -> None:
    data = mirror_spec_dict(joint_velocity={"transform": "permute_sign", "sign": [1, 2], "components": ["a", "b"]})
    with pytest.raises(ValidationError, match="sign of 'b' is 2.0"):
        SymmetrySpec.model_validate(data)
    with pytest.raises(ValidationError, match="at least one group"):
        SymmetrySpec.model_validate({**mirror_spec_dict(), "groups": []})
    with pytest.raises(ValidationError, match="listed once"):
        SymmetrySpec.model_validate({**mirror_spec_dict(), "groups": ["mirror", "mirror"]})
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        SymmetrySpec.model_validate(mirror_spec_dict(goal_position="rotate3d"))
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SymmetrySpec.model_validate({**mirror_spec_dict(), "axis": "z"})


def test_binding_checks_names_and_sizes() -> None:
    spec = SymmetrySpec.model_validate(mirror_spec_dict(goal_position="rotate2d"))
    three = (*OBS, "goal_position.z")
    with pytest.raises(SymmetrySpecError, match="'goal_position': rotate2d needs exactly 2 components"):
        spec.bind(three, ACT)
    with pytest.raises(SymmetrySpecError, match="observation field 'extra' is not covered by the spec"):
        spec.bind((*OBS, "extra.value"), ACT)
    with pytest.raises(SymmetrySpecError, match="action field 'joint_effort' is unknown"):
        spec.bind(OBS, ("torque.shoulder", "torque.elbow"))
    with pytest.raises(SymmetrySpecError, match="not of the form field.component"):
        spec.bind((*OBS, "flat"), ACT)
    with pytest.raises(SymmetrySpecError, match="not a rotate2d pair"):
        O2.rotate2d_indices("joint_position")


def test_names_are_matched_by_name_not_position() -> None:
    shuffled = tuple(reversed(OBS))
    bound = REACHER.bind(shuffled, ACT)
    o = np.array([0.4, 0.9, 1.5, -2.0, 0.3, 0.6])
    moved = bound.act_observation_np(o[::-1].copy(), 1.0)[::-1]
    np.testing.assert_allclose(moved, ROTATION.act_observation_np(o, 1.0))


def test_yaml_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "groups: [rotation]\nobservation:\n  goal_position:\n    - {transform: rotate2d, components: [x, y, z]}\n"
        "action:\n  joint_effort: invariant\n"
    )
    with pytest.raises(
        ConfigError, match=r"spec.yaml: invalid SymmetrySpec: .*'goal_position': rotate2d needs exactly"
    ):
        load_config(path, SymmetrySpec)


def test_bound_symmetry_is_a_module_whose_buffers_follow_to() -> None:
    bound: BoundSymmetry = REACHER.bind(OBS, ACT)
    assert not list(bound.parameters()) and bound.state_dict() == {}
    bound.to(torch.float64)  # buffers change dtype; acting still follows the input's dtype
    moved = bound.act_observation(torch.ones(6), GroupElement.of(0.5, dtype=torch.float32))
    assert moved.dtype == torch.float32
    np.testing.assert_allclose(moved.numpy(), ROTATION.act_observation_np(np.ones(6), 0.5), atol=1e-6)
