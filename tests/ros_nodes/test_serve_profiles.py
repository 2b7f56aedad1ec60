"""Serving any robot profile over real DDS: the iiwa's sim_robot and policy_server, and the node's robot check.

The iiwa model is a CI-size canonical IQL policy (fleet → bags → Minari → IQL → ONNX → gate, signed
with the session's test key): these tests check that a profile's robot is served (its joints by
name, its velocity targets on its own controller topic, its rates), not that a 60-step policy
reaches; the demo's policy does that (tests/pipeline/test_cli_robots_demo.py). The two iiwa tests
build that model end to end (about 2 minutes on the shared 2-core machine): they are marked slow
and run in CI.
"""

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from lifecycle_msgs.msg import State, Transition

from pipeline.fleet import FleetConfig, record_fleet
from pipeline.gate import GateConfig, run_gate
from pipeline.serve.launch import rehearse
from sim.robots.profile import load_profile
from tests.iiwa import tiny_iiwa_model
from tests.ros_nodes.conftest import Models, Server

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def iiwa_model(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signed, gate-certified iiwa model (CI size: the gate's test suite asks for no success)."""
    root = tmp_path_factory.mktemp("ros-iiwa")
    record_fleet(FleetConfig(robot="kuka_iiwa", robots=1, episodes=4, recipe="expert"), root / "fleet", workers=1)
    model = tiny_iiwa_model(root / "fleet", "symgate/ros-iiwa-v0", root)
    gate = GateConfig.model_validate(
        {
            "suites": [
                {"name": "train", "contexts": "train", "episodes_per_context": 2},
                {"name": "test", "contexts": "test", "min_success": 0.0, "min_success_ci_low": 0.0},
            ],
            "gap": None,
            "bootstrap_resamples": 100,
        }
    )
    assert run_gate(model, gate, workers=1, signing_key=models.signing_key).report.verdict == "pass"
    return model


@pytest.mark.slow
def test_the_iiwa_is_served_over_ros_with_its_profile(ros: None, models: Models, iiwa_model: Path) -> None:
    trusted = {"trusted_keys": [str(models.trusted_key)]}
    outcome = rehearse(iiwa_model, "test", count=2, speedup=1.0, server_parameters=trusted)  # real time
    assert outcome["robot"] == "kuka_iiwa"  # the contract's robot
    assert outcome["control_hz"] == 20.0  # the profile's rate
    contexts = load_profile("kuka_iiwa").profile.contexts.angles("test")[:2]
    assert [e["context_deg"] for e in outcome["episodes"]] == pytest.approx([math.degrees(c) for c in contexts])
    # Every command the node sent had the iiwa's 7 joints (sim_robot counts any other shape as bad), and they
    # went to the profile's controller topic (the supervisor counts them there).
    assert outcome["bad_commands"] == 0 and outcome["commands"] > 0
    assert all(0 < e["steps"] <= 100 for e in outcome["episodes"])  # the profile's time limit
    assert outcome["diagnostics"]["certificate_id"] != "UNCERTIFIED"
    assert outcome["diagnostics"]["watchdog"] == "ok"


@pytest.mark.slow
def test_serving_a_model_to_another_robot_is_refused_at_configure(
    ros: None, models: Models, iiwa_model: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    trusted = {"trusted_keys": [str(models.trusted_key)]}
    with pytest.raises(RuntimeError, match="refused to configure"):
        rehearse(iiwa_model, "test", count=1, speedup=1.0, server_parameters=trusted, robot="reacher")
    log = capfd.readouterr().err
    assert "the model does not fit this robot" in log
    assert "action_interface: contract velocity, robot effort" in log


def _narrowed_reacher(tmp_path: Path, effort: str) -> Path:
    """The reacher's profile on a copy of its URDF whose torque limits are ``effort``; the profile sets no limit."""
    urdf = (REPO / "sim/assets/reacher.urdf").read_text().replace('effort="2.0"', f'effort="{effort}"')
    (tmp_path / "reacher.urdf").write_text(urdf)
    profile = yaml.safe_load((REPO / "deploy/robots/reacher/robot.yaml").read_text())
    assert not profile["action"].get("limits")
    profile["urdf"] = {"path": "reacher.urdf"}
    (tmp_path / "robot.yaml").write_text(yaml.safe_dump(profile))
    return tmp_path / "robot.yaml"


def test_a_model_within_the_robot_s_urdf_limits_configures(start_server: Callable[..., Server], models: Models) -> None:
    server = start_server(model_dir=str(models.certified), robot_profile=str(REPO / "deploy/robots/reacher/robot.yaml"))
    assert server.harness.transition(Transition.TRANSITION_CONFIGURE)
    assert server.harness.state() == State.PRIMARY_STATE_INACTIVE


def test_a_model_beyond_the_robot_s_urdf_limits_is_refused_at_configure(
    start_server: Callable[..., Server], models: Models, tmp_path: Path
) -> None:
    """The profile writes no limit: the URDF's (here 1.5 N·m, the model's contract says 2) is the one checked."""
    weaker = start_server(model_dir=str(models.certified), robot_profile=str(_narrowed_reacher(tmp_path, "1.5")))
    assert not weaker.harness.transition(Transition.TRANSITION_CONFIGURE)
    assert weaker.harness.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert "action limit of shoulder: contract upper 2 lies outside this robot's [-1.5, 1.5]" in weaker.log_text()
