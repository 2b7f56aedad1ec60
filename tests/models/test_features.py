import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import GenericFeatures, Normalizer, ObservationEncoder, ReacherFeatures
from sim.robot import load_robot_description

JOINTS = ("shoulder", "elbow")
NAMES = (
    "joint_position.shoulder",
    "joint_position.elbow",
    "joint_velocity.shoulder",
    "joint_velocity.elbow",
    "goal_position.x",
    "goal_position.y",
)
angles = st.floats(-math.pi, math.pi, allow_nan=False)
values = st.floats(-3.0, 3.0, allow_nan=False)


def observation(q1: float, q2: float, v1: float, v2: float, gx: float, gy: float) -> torch.Tensor:
    return torch.tensor([q1, q2, v1, v2, gx, gy], dtype=torch.float64)


def rotate(points: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate (..., 2) points by theta."""
    c, s = math.cos(theta), math.sin(theta)
    return torch.stack([c * points[..., 0] - s * points[..., 1], s * points[..., 0] + c * points[..., 1]], dim=-1)


def test_reacher_feature_names() -> None:
    features = ReacherFeatures(NAMES, (0.5, 0.5), joint_names=JOINTS)
    assert features.out_features == 8 and features.in_features == 6
    assert features.feature_names == (
        "shoulder_from_goal.x",
        "shoulder_from_goal.y",
        "elbow_from_goal.x",
        "elbow_from_goal.y",
        "hand_from_goal.x",
        "hand_from_goal.y",
        "joint_velocity.shoulder",
        "joint_velocity.elbow",
    )


@given(q1=angles, q2=angles, v1=values, v2=values, gx=values, gy=values)
@settings(max_examples=50, deadline=None)
def test_reacher_features_match_forward_kinematics(
    q1: float, q2: float, v1: float, v2: float, gx: float, gy: float
) -> None:
    robot = load_robot_description()
    features = ReacherFeatures.from_robot(robot, NAMES)(observation(q1, q2, v1, v2, gx, gy)).numpy()
    elbow, hand = robot.forward_kinematics([q1, q2])
    goal = np.array([gx, gy])
    np.testing.assert_allclose(features[0:2], -goal, atol=1e-12)
    np.testing.assert_allclose(features[2:4], elbow - goal, atol=1e-12)
    np.testing.assert_allclose(features[4:6], hand - goal, atol=1e-12)
    np.testing.assert_allclose(features[6:8], [v1, v2], atol=1e-12)


@given(q1=angles, q2=angles, v1=values, v2=values, gx=values, gy=values, theta=angles)
@settings(max_examples=50, deadline=None)
def test_reacher_features_are_rotation_equivariant(
    q1: float, q2: float, v1: float, v2: float, gx: float, gy: float, theta: float
) -> None:
    features = ReacherFeatures(NAMES, (0.5, 0.4), joint_names=JOINTS)
    goal = rotate(torch.tensor([gx, gy], dtype=torch.float64), theta)
    original = features(observation(q1, q2, v1, v2, gx, gy))
    rotated = features(observation(q1 + theta, q2, v1, v2, float(goal[0]), float(goal[1])))
    torch.testing.assert_close(rotated[:6].reshape(3, 2), rotate(original[:6].reshape(3, 2), theta), atol=1e-12, rtol=0)
    torch.testing.assert_close(rotated[6:], original[6:], atol=0, rtol=0)


def test_reacher_features_look_signals_up_by_name() -> None:
    permutation = [5, 2, 0, 4, 1, 3]
    shuffled = ReacherFeatures([NAMES[i] for i in permutation] + ["extra"], (0.5, 0.5), joint_names=JOINTS)
    ordered = ReacherFeatures(NAMES, (0.5, 0.5), joint_names=JOINTS)
    raw = torch.randn(3, 4, 6)
    extra = torch.randn(3, 4, 1)
    torch.testing.assert_close(shuffled(torch.cat([raw[..., permutation], extra], dim=-1)), ordered(raw))


def test_reacher_features_keep_leading_dims() -> None:
    assert ReacherFeatures(NAMES, (0.5, 0.5), joint_names=JOINTS)(torch.randn(3, 4, 5, 6)).shape == (3, 4, 5, 8)


def test_reacher_features_reject_missing_or_repeated_names() -> None:
    with pytest.raises(ValueError, match="goal_position.y"):
        ReacherFeatures(NAMES[:-1], (0.5, 0.5), joint_names=JOINTS)
    with pytest.raises(ValueError, match="unique"):
        ReacherFeatures((*NAMES, "goal_position.x"), (0.5, 0.5), joint_names=JOINTS)
    with pytest.raises(ValueError, match="joint_position.wrist"):
        ReacherFeatures(NAMES, (0.5, 0.5), joint_names=("shoulder", "wrist"))
    with pytest.raises(ValueError, match="positive"):
        ReacherFeatures(NAMES, (0.5, 0.0), joint_names=JOINTS)


def test_generic_features_encode_angles_as_cos_sin() -> None:
    features = GenericFeatures(["a", "angle", "b", "heading"], angle_components=["heading", "angle"])
    assert features.feature_names == ("a", "angle.cos", "angle.sin", "b", "heading.cos", "heading.sin")
    assert features.out_features == 6
    raw = torch.randn(2, 5, 4)
    out = features(raw)
    expected = torch.stack(
        [raw[..., 0], raw[..., 1].cos(), raw[..., 1].sin(), raw[..., 2], raw[..., 3].cos(), raw[..., 3].sin()], dim=-1
    )
    torch.testing.assert_close(out, expected)
    # Periodic in the angle components: a 2π shift changes nothing.
    shifted = raw + torch.tensor([0.0, 2 * math.pi, 0.0, -2 * math.pi])
    torch.testing.assert_close(features(shifted), out, atol=1e-5, rtol=0)


def test_generic_features_without_angles_is_identity() -> None:
    features = GenericFeatures(["a", "b"], angle_components=[])
    raw = torch.randn(3, 2)
    torch.testing.assert_close(features(raw), raw)
    with pytest.raises(ValueError, match="not found"):
        GenericFeatures(["a"], ["b"])


def test_normalizer_fit_standardises() -> None:
    data = torch.randn(500, 3) * torch.tensor([0.1, 5.0, 1.0]) + torch.tensor([3.0, -2.0, 0.0])
    normalizer = Normalizer(3)
    torch.testing.assert_close(normalizer(data), data)  # identity before fitting
    assert not normalizer.fitted
    normalizer.fit(data.reshape(10, 50, 3))  # leading dims are samples
    assert normalizer.fitted
    out = normalizer(data)
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(0, correction=0), torch.ones(3), atol=1e-5, rtol=0)
    assert {"mean", "std"} <= set(normalizer.state_dict())


def test_normalizer_floors_the_std_of_constant_features() -> None:
    normalizer = Normalizer(2)
    with pytest.warns(UserWarning, match=r"\['a'\] are constant"):
        normalizer.fit(torch.tensor([[1.0, 0.0], [1.0, 2.0]]), names=["a", "b"])
    assert normalizer.std[0] == pytest.approx(1e-6)
    out = normalizer(torch.tensor([[1.0, 1.0]]))
    assert torch.isfinite(out).all() and out[0, 0] == 0


def test_normalizer_rejects_bad_data() -> None:
    normalizer = Normalizer(2)
    with pytest.raises(ValueError, match="width 2"):
        normalizer.fit(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="zero samples"):
        normalizer.fit(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="non-finite"):
        normalizer.fit(torch.tensor([[0.0, math.nan]]))


def test_normalizer_state_round_trips() -> None:
    fitted = Normalizer(3)
    fitted.fit(torch.randn(50, 3) * 4 + 1)
    fresh = Normalizer(3)
    fresh.load_state_dict(fitted.state_dict())
    x = torch.randn(7, 3)
    torch.testing.assert_close(fresh(x), fitted(x))
    assert fresh.fitted


def test_observation_encoder_fits_on_features() -> None:
    encoder = ObservationEncoder.from_features(ReacherFeatures(NAMES, (0.5, 0.5), joint_names=JOINTS))
    assert encoder.out_features == 8 and encoder.feature_names[0] == "shoulder_from_goal.x"
    raw = torch.randn(2, 300, 6)
    encoder.fit(raw)
    encoded = encoder(raw).reshape(-1, 8)
    torch.testing.assert_close(encoded.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(encoded.std(0, correction=0), torch.ones(8), atol=1e-5, rtol=0)
    assert {"normalizer.mean", "normalizer.std"} <= set(encoder.state_dict())


def test_observation_encoder_checks_widths() -> None:
    with pytest.raises(ValueError, match="8 values"):
        ObservationEncoder(ReacherFeatures(NAMES, (0.5, 0.5), joint_names=JOINTS), Normalizer(6))


def single_context_observations(samples: int, context: float) -> torch.Tensor:
    """Arm states around a goal at bearing `context`, 0.7 m from the shoulder."""
    generator = torch.Generator().manual_seed(1)
    joints = torch.rand(samples, 4, generator=generator) * 2 - 1
    joints[:, 0] += context
    goal = 0.7 * torch.tensor([math.cos(context), math.sin(context)]).expand(samples, 2)
    return torch.cat([joints, goal], dim=-1)


def test_single_context_data_warns_and_the_c4_orbit_fixes_it() -> None:
    encoder = ObservationEncoder.from_features(ReacherFeatures(NAMES, (0.5, 0.5), joint_names=JOINTS))
    with pytest.warns(UserWarning, match="shoulder_from_goal.x"):
        encoder.fit(single_context_observations(256, 0.0))
    # The orbit under C4: every observation rotated by 0, 90, 180 and 270 degrees.
    orbit = torch.cat([single_context_observations(256, k * math.pi / 2) for k in range(4)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.fit(orbit)
    assert (encoder.normalizer.std > 0.1).all()
    torch.testing.assert_close(encoder.normalizer.mean[:6], torch.zeros(6), atol=1e-6, rtol=0)
