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
        ({"action_high": [3.0] * 7}, "action limit of lbr_iiwa_joint_1: contract 3.0, robot 2.0"),
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
