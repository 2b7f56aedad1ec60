"""The sim-to-robot rehearsal: sim_robot and policy_server in separate processes over real DDS."""

from pipeline.serve.launch import rehearse
from tests.ros_nodes.conftest import Models


def test_certified_policy_reaches_held_out_goals_over_ros(ros: None, models: Models) -> None:
    trusted = {"trusted_keys": [str(models.trusted_key)]}
    outcome = rehearse(
        models.certified, "test", count=3, speedup=1.0, server_parameters=trusted
    )  # real time, as on a robot
    assert [e["success"] for e in outcome["episodes"]] == [True, True, True], outcome["episodes"]
    assert outcome["bad_commands"] == 0 and outcome["commands"] > 0
    latency = outcome["obs_to_command_ms"]
    assert latency is not None and 0.0 < latency["p50"] < 1000.0 / outcome["control_hz"] * 3
    assert outcome["diagnostics"]["certificate_id"] != "UNCERTIFIED"
