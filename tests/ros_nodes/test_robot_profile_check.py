"""The node's configure-time check of a model's contract against this robot's profile (plain YAML, no simulator)."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from symgate_ros.model import ModelError, robot_mismatches

ROBOTS = Path(__file__).resolve().parents[2] / "deploy" / "robots"
IIWA_JOINTS = [f"lbr_iiwa_joint_{i}" for i in range(1, 8)]


def _iiwa_contract(**changes: Any) -> dict[str, Any]:
    contract = {
        "robot": "kuka_iiwa",
        "action_interface": "velocity",
        "joint_names": IIWA_JOINTS,
        "control_hz": 20.0,
        "action_low": [-2.0] * 7,
        "action_high": [2.0] * 7,
    }
    return {**contract, **changes}


def test_a_matching_contract_passes() -> None:
    assert robot_mismatches(_iiwa_contract(), ROBOTS / "kuka_iiwa" / "robot.yaml") == []
    reacher = {"joint_names": ["shoulder", "elbow"], "control_hz": 50.0, "action_high": [2.0, 2.0]}
    assert robot_mismatches(reacher, ROBOTS / "reacher" / "robot.yaml") == []  # old contracts: the reacher's


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"robot": "franka_panda"}, "robot: contract 'franka_panda', this robot 'kuka_iiwa'"),
        ({"joint_names": IIWA_JOINTS[::-1]}, "joint_names: contract"),
        ({"action_interface": "effort"}, "action_interface: contract effort, robot velocity"),
        ({"control_hz": 50.0}, "control_hz: contract 50.0 Hz, robot 20 Hz"),
        ({"action_high": [3.0] * 7}, "action limit of lbr_iiwa_joint_1: contract upper 3 lies outside this robot's"),
        ({"action_low": [-2.5] * 7}, "action limit of lbr_iiwa_joint_1: contract lower -2.5 lies outside"),
    ],
)
def test_a_mismatch_is_named(changes: dict[str, Any], problem: str) -> None:
    problems = robot_mismatches(_iiwa_contract(**changes), ROBOTS / "kuka_iiwa" / "robot.yaml")
    assert any(problem in p for p in problems), problems


def test_the_reacher_model_does_not_fit_the_iiwa() -> None:
    reacher = {"joint_names": ["shoulder", "elbow"], "control_hz": 50.0, "action_high": [2.0, 2.0]}
    problems = robot_mismatches(reacher, ROBOTS / "kuka_iiwa" / "robot.yaml")
    assert len(problems) == 4  # robot, joints, interface, rate


def test_an_unreadable_profile_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "robot.yaml").write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ModelError, match="a robot profile is a mapping"):
        robot_mismatches(_iiwa_contract(), tmp_path / "robot.yaml")


def test_limits_come_from_the_urdf_when_the_profile_sets_none() -> None:
    """The reacher's profile writes no limit: its torque limit (2 N·m) is the URDF's <limit effort>."""
    reacher = {"joint_names": ["shoulder", "elbow"], "control_hz": 50.0, "action_low": [-2.0] * 2}
    assert robot_mismatches({**reacher, "action_high": [2.0, 2.0]}, ROBOTS / "reacher" / "robot.yaml") == []
    problems = robot_mismatches({**reacher, "action_high": [2.0, 2.5]}, ROBOTS / "reacher" / "robot.yaml")
    assert problems == ["action limit of elbow: contract upper 2.5 lies outside this robot's [-2, 2]"]


def _own_arm(tmp_path: Path, urdf_limit: str, interface: str = "position") -> Path:
    """A one-joint arm profile with its own URDF (``urdf.path``), as a user writes it."""
    (tmp_path / "arm.urdf").write_text(
        '<robot name="arm"><link name="base"/><link name="tip"/>'
        f'<joint name="yaw" type="revolute"><parent link="base"/><child link="tip"/><axis xyz="0 0 1"/>'
        f"<limit {urdf_limit}/></joint></robot>"
    )
    profile = {
        "name": "arm",
        "urdf": {"path": "arm.urdf"},
        "joints": ["yaw"],
        "action": {"interface": interface},
        "control_hz": 20,
    }
    (tmp_path / "robot.yaml").write_text(yaml.safe_dump(profile))
    return tmp_path / "robot.yaml"


def test_position_targets_must_lie_within_the_urdf_joint_range(tmp_path: Path) -> None:
    profile = _own_arm(tmp_path, 'lower="-1.5" upper="1.5" velocity="1" effort="10"')
    contract = {"robot": "arm", "action_interface": "position", "joint_names": ["yaw"], "control_hz": 20.0}
    assert robot_mismatches({**contract, "action_low": [-1.5], "action_high": [1.0]}, profile) == []
    problems = robot_mismatches({**contract, "action_low": [-1.6], "action_high": [1.0]}, profile)
    assert problems == ["action limit of yaw: contract lower -1.6 lies outside this robot's [-1.5, 1.5]"]


def test_a_joint_missing_from_the_urdf_or_a_missing_urdf_is_named(tmp_path: Path) -> None:
    profile = _own_arm(tmp_path, 'lower="-1" upper="1" velocity="1" effort="1"', interface="velocity")
    contract = {"robot": "arm", "action_interface": "velocity", "joint_names": ["yaw"], "control_hz": 20.0}
    data = yaml.safe_load(profile.read_text())
    profile.write_text(yaml.safe_dump({**data, "joints": ["pitch"]}))
    problems = robot_mismatches({**contract, "joint_names": ["pitch"]}, profile)
    assert problems == ["joint pitch: not a movable joint of arm.urdf"]
    (tmp_path / "arm.urdf").unlink()
    with pytest.raises(ModelError, match="arm.urdf: cannot read the URDF"):
        robot_mismatches(contract, profile)
