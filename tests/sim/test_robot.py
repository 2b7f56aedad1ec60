import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.bullet import connect_direct, pybullet
from sim.robot import DEFAULT_URDF, RobotDescriptionError, load_robot_description

angles = st.floats(-math.pi, math.pi, allow_nan=False)


def test_bundled_urdf_describes_the_reacher() -> None:
    robot = load_robot_description()
    assert robot.joint_names == ("shoulder", "elbow")
    assert robot.link_lengths == (0.5, 0.5)
    assert robot.hand_link == "hand"
    shoulder, elbow = robot.joints
    assert shoulder.continuous and math.isinf(shoulder.lower)
    assert not elbow.continuous and (elbow.lower, elbow.upper) == (-2.6, 2.6)
    np.testing.assert_array_equal(robot.effort_limits, [2.0, 2.0])


@settings(max_examples=25, deadline=None)
@given(q1=angles, q2=angles)
def test_forward_kinematics_matches_pybullet(q1: float, q2: float) -> None:
    robot = load_robot_description()
    client = connect_direct()
    try:
        body = client.loadURDF(str(DEFAULT_URDF), useFixedBase=True)
        names = {client.getJointInfo(body, i)[1].decode(): i for i in range(client.getNumJoints(body))}
        client.resetJointState(body, names["shoulder"], q1)
        client.resetJointState(body, names["elbow"], q2)
        elbow, hand = robot.forward_kinematics([q1, q2])
        np.testing.assert_allclose(
            client.getLinkState(body, names["elbow"])[4][:2], elbow, atol=1e-6
        )  # PyBullet reports float32 poses
        np.testing.assert_allclose(client.getLinkState(body, names["hand_joint"])[4][:2], hand, atol=1e-6)
    finally:
        client.disconnect()


def test_forward_kinematics_is_vectorised() -> None:
    robot = load_robot_description()
    q = np.zeros((5, 3, 2))
    elbow, hand = robot.forward_kinematics(q)
    assert elbow.shape == hand.shape == (5, 3, 2)
    np.testing.assert_allclose(hand[..., 0], 1.0)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        robot.forward_kinematics(np.zeros(3))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "robot.urdf"
    path.write_text(text)
    return path


def test_unreadable_urdf_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(RobotDescriptionError, match="missing.urdf"):
        load_robot_description(tmp_path / "missing.urdf")
    with pytest.raises(RobotDescriptionError, match="robot.urdf: cannot read URDF"):
        load_robot_description(_write(tmp_path, "<robot"))


def test_non_planar_joint_is_rejected(tmp_path: Path) -> None:
    text = DEFAULT_URDF.read_text().replace(
        '<axis xyz="0 0 1"/>\n    <limit lower', '<axis xyz="0 1 0"/>\n    <limit lower'
    )
    with pytest.raises(RobotDescriptionError, match="joint 'elbow'.*not \\+z"):
        load_robot_description(_write(tmp_path, text))


def test_wrong_joint_count_is_rejected(tmp_path: Path) -> None:
    text = DEFAULT_URDF.read_text().replace('type="continuous"', 'type="fixed"')
    with pytest.raises(RobotDescriptionError, match="expected 2 revolute/continuous joints"):
        load_robot_description(_write(tmp_path, text))


def test_missing_torque_limit_is_rejected(tmp_path: Path) -> None:
    text = DEFAULT_URDF.read_text().replace('<limit effort="2.0" velocity="20.0"/>', "")
    with pytest.raises(RobotDescriptionError, match="joint 'shoulder'.*effort"):
        load_robot_description(_write(tmp_path, text))


def test_pybullet_is_imported_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    client = connect_direct()
    client.disconnect()
    assert "argv" not in capfd.readouterr().out
    assert pybullet.DIRECT == 2  # the real module, re-exported
