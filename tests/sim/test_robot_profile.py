"""Robot profiles: loading, validation errors that name file and field, derived symmetry, FK vs PyBullet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from models.symmetry import SymmetrySpec
from sim.bullet import connect_direct, pybullet
from sim.robots.profile import Robot, RobotProfileError, list_profiles, load_profile, load_profile_dict

#: A third pybullet_data arm described by a profile only (no code): the Franka Panda, fingers held open.
PANDA: dict[str, Any] = {
    "name": "franka_panda",
    "urdf": {"pybullet_data": "franka_panda/panda.urdf"},
    "base_link": "panda_link0",
    "joints": [f"panda_joint{i}" for i in range(1, 8)],
    "held_joints": {"panda_finger_joint1": 0.04, "panda_finger_joint2": 0.04},
    "action": {"interface": "velocity", "limits": {f"panda_joint{i}": {"velocity": 1.5} for i in range(1, 8)}},
    "control_hz": 20,
    "physics_hz": 240,
    "task": {
        "end_effector": "panda_hand",
        "feature_links": ["panda_link4"],
        "goal": {"radius": [0.5, 0.5], "height": [0.4, 0.4]},
        "max_episode_steps": 100,
    },
    "start": {"joint_position_deg": {"panda_joint1": -40.0, "panda_joint4": -120.0, "panda_joint6": 90.0}},
    "contexts": {"train_deg": [0.0], "sector_deg": [-110.0, 110.0]},
}


def _iiwa_yaml() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((Path(load_profile("kuka_iiwa").source)).read_text())
    return data


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_profiles_load() -> None:
    assert {"reacher", "kuka_iiwa"} <= set(list_profiles())
    iiwa = load_profile("kuka_iiwa")
    assert iiwa.joint_names == tuple(f"lbr_iiwa_joint_{i}" for i in range(1, 8))
    assert iiwa.profile.action_repeat == 12
    assert iiwa.symmetry_joint == "lbr_iiwa_joint_1"
    low, high = iiwa.action_limits()
    np.testing.assert_allclose(high, 2.0)
    np.testing.assert_allclose(low, -2.0)
    assert iiwa.limits[1].upper == pytest.approx(2.09439510239)
    reacher = load_profile("reacher")
    assert reacher.joint_names == ("shoulder", "elbow")
    np.testing.assert_allclose(reacher.action_limits()[1], [2.0, 2.0])  # the URDF's effort limits


@pytest.mark.parametrize("name", ["reacher", "kuka_iiwa"])
def test_derived_symmetry_binds_to_the_observation_names(name: str) -> None:
    robot = load_profile(name)
    bound = SymmetrySpec.model_validate(robot.symmetry_spec()).bind(robot.observation_names, robot.action_names)
    assert bound.observation_angle_names == (f"joint_position.{robot.symmetry_joint}",)
    assert bound.actions_invariant


def test_a_third_arm_needs_only_a_profile(tmp_path: Path) -> None:
    robot = load_profile(_write(tmp_path, PANDA))
    assert robot.symmetry_joint == "panda_joint1"
    assert len(robot.observation_names) == 7 + 7 + 3
    SymmetrySpec.model_validate(robot.symmetry_spec()).bind(robot.observation_names, robot.action_names)


@pytest.mark.parametrize(
    ("edit", "field", "problem"),
    [
        (
            lambda d: d["joints"].__setitem__(6, "lbr_iiwa_joint_8"),
            "joints",
            "'lbr_iiwa_joint_8' is not a movable joint",
        ),
        (lambda d: d["task"].__setitem__("end_effector", "gripper"), "task.end_effector", "no link 'gripper'"),
        (lambda d: d.__setitem__("base_link", "world"), "base_link", "no link 'world'"),
        (lambda d: d.__setitem__("physics_hz", 250), "(top level)", "not an integer multiple of control_hz=20"),
        (
            lambda d: d["action"]["limits"].__setitem__("lbr_iiwa_joint_2", {"upper": 2.5}),
            "action.limits.lbr_iiwa_joint_2.upper",
            "outside the URDF's",
        ),
        (
            lambda d: d["action"]["limits"].__setitem__("lbr_iiwa_joint_2", {"velocity": 20.0}),
            "action.limits.lbr_iiwa_joint_2.velocity",
            "exceeds the URDF's limit 10.0",
        ),
        (lambda d: d["action"].__setitem__("interface", "torque"), "action.interface", "'effort', 'velocity' or"),
        (lambda d: d["contexts"].__setitem__("train_deg", [0.0, 180.0]), "contexts", "outside sector_deg"),
        (lambda d: d.__setitem__("symmetry_joint", "lbr_iiwa_joint_2"), "symmetry_joint", "turns about the base z"),
    ],
)
def test_validation_errors_name_file_field_and_problem(tmp_path: Path, edit: Any, field: str, problem: str) -> None:
    data = _iiwa_yaml()
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(RobotProfileError) as caught:
        robot = load_profile(path)
        robot.symmetry_joint  # noqa: B018  (derived lazily: checked on first use)
    message = str(caught.value)
    assert str(path) in message
    assert f": {field}" in message
    assert problem in message


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(RobotProfileError, match="known profiles: .*kuka_iiwa"):
        load_profile("ur5e")


def _pybullet_link_frames(robot: Robot, q: np.ndarray) -> dict[str, np.ndarray]:
    bc = connect_direct()
    try:
        body = bc.loadURDF(str(robot.urdf_path), useFixedBase=True)
        joints = {bc.getJointInfo(body, i)[1].decode(): i for i in range(bc.getNumJoints(body))}
        links = {bc.getJointInfo(body, i)[12].decode(): i for i in range(bc.getNumJoints(body))}
        for name, value in robot.profile.held_joints.items():
            bc.resetJointState(body, joints[name], value)
        for name, value in zip(robot.joint_names, q, strict=True):
            bc.resetJointState(body, joints[name], float(value))
        return {
            link: np.array(bc.getLinkState(body, links[link], computeForwardKinematics=True)[4])
            for link in robot.kinematics.links
        }
    finally:
        bc.disconnect()


@pytest.mark.parametrize("name", ["reacher", "kuka_iiwa", "panda"])
def test_forward_kinematics_matches_pybullet_link_frames(tmp_path: Path, name: str) -> None:
    robot = load_profile(_write(tmp_path, PANDA)) if name == "panda" else load_profile(name)
    rng = np.random.default_rng(0)
    low = np.array([max(limit.lower, -3.0) for limit in robot.limits])
    high = np.array([min(limit.upper, 3.0) for limit in robot.limits])
    base = pybullet.getQuaternionFromEuler((0, 0, 0))
    assert base == (0.0, 0.0, 0.0, 1.0)  # the base sits at the world origin: base frame = world frame
    for _ in range(10):
        q = rng.uniform(low, high)
        frames = _pybullet_link_frames(robot, q)
        for link, expected in frames.items():
            np.testing.assert_allclose(robot.kinematics.position(link, q), expected, atol=1e-6)


def test_jacobian_matches_finite_differences() -> None:
    robot = load_profile("kuka_iiwa")
    q = np.random.default_rng(1).uniform(-1.5, 1.5, size=7)
    link = robot.profile.task.end_effector
    _, jacobian = robot.kinematics.jacobian(link, q)
    step = 1e-6
    numeric = np.stack(
        [
            (robot.kinematics.position(link, q + step * e) - robot.kinematics.position(link, q - step * e)) / (2 * step)
            for e in np.eye(7)
        ],
        axis=1,
    )
    np.testing.assert_allclose(jacobian, numeric, atol=1e-7)
    assert np.abs(jacobian[:, 6]).max() < 1e-12  # joint 7 does not move link 7's origin: a dead action for reach


def test_rotation_about_the_symmetry_joint_rotates_every_link() -> None:
    robot = load_profile("kuka_iiwa")
    rng = np.random.default_rng(2)
    for theta in rng.uniform(-1.0, 1.0, size=5):
        q = rng.uniform(-1.0, 1.0, size=7)
        shifted = q.copy()
        shifted[0] += theta
        c, s = np.cos(theta), np.sin(theta)
        rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        np.testing.assert_allclose(
            robot.kinematics.positions(shifted), robot.kinematics.positions(q) @ rz.T, atol=1e-12
        )


def test_profile_mapping_validates_without_a_file(tmp_path: Path) -> None:
    data = dict(PANDA, control_hz=0)
    with pytest.raises(RobotProfileError, match=r"x\.yaml: control_hz: Input should be greater than 0"):
        load_profile_dict(data, tmp_path / "x.yaml")
