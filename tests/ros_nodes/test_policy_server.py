"""policy_server over real DDS: lifecycle, certificates, by-name joints, watchdog, NaN, e-stop, hot swap."""

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import State, Transition
from std_msgs.msg import Bool

from symgate_ros.model import PolicyModel
from symgate_ros.signature import load_trusted_keys
from tests.ros_nodes.conftest import Harness, Models, Server

CONFIGURE, ACTIVATE = Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE
DEACTIVATE, CLEANUP = Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP
PERIOD_S = 1 / 50  # the contract's control rate


def expected_torque(model_dir: Path, position_shoulder_elbow: list[float], goal: tuple[float, float]) -> np.ndarray:
    model = PolicyModel(model_dir, allow_uncertified=True)
    signals = {"joint_position": position_shoulder_elbow, "joint_velocity": [0.0, 0.0]}
    values = [
        goal["xy".index(s.axis)] if s.group == "goal_position" else signals[s.group][s.joint] for s in model.observation
    ]
    return np.clip(model.act(np.asarray([values], np.float32)), model.action_low, model.action_high)


def active(start_server: Callable[..., Server], model: Path, **parameters: object) -> Server:
    server = start_server(model_dir=str(model), **parameters)
    assert server.harness.transition(CONFIGURE), "configure refused"
    assert server.harness.transition(ACTIVATE), "activate refused"
    assert server.harness.wait_for(lambda: len(server.harness.commands) > 5)
    return server


def level(status: DiagnosticStatus) -> int:
    return int.from_bytes(status.level, "little")


def test_lifecycle_and_commands_map_joints_by_name(start_server: Callable[..., Server], models: Models) -> None:
    server = start_server(model_dir=str(models.certified))
    harness = server.harness
    assert harness.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert harness.transition(CONFIGURE) and harness.state() == State.PRIMARY_STATE_INACTIVE
    assert harness.commands == []  # inactive: nothing is commanded
    assert harness.transition(ACTIVATE) and harness.state() == State.PRIMARY_STATE_ACTIVE
    assert harness.wait_for(lambda: len(harness.commands) >= 20)
    # The sensor lists joints elbow first (0.3 rad) then shoulder (2.0 rad); the model wants shoulder first.
    expected = expected_torque(models.certified, [2.0, 0.3], (0.7, 0.0))
    np.testing.assert_allclose(harness.commands[-1][1], expected, atol=1e-6)
    assert harness.wait_for(lambda: harness.latest_status() is not None)
    status = {kv.key: kv.value for kv in harness.latest_status().values}
    # The loop's rate, on the node's own clock (the harness's receipt times would add DDS and scheduler jitter).
    assert float(status["period_p50_us"]) * 1e-6 == pytest.approx(PERIOD_S, rel=0.05)
    assert level(harness.latest_status()) == DiagnosticStatus.OK[0]
    certified = PolicyModel(models.certified, trusted=load_trusted_keys([models.trusted_key]))
    assert status["model_sha256"] == certified.onnx_sha256
    assert status["certificate_id"] == certified.certificate_id and certified.certification is not None
    assert status["signed_by"] == certified.certification.signer.key_id
    for key in ("inference_p50_us", "inference_p99_us", "period_jitter_std_us", "joint_state_age_ms", "overruns"):
        assert float(status[key]) >= 0.0
    before = time.monotonic()
    assert harness.transition(DEACTIVATE) and harness.state() == State.PRIMARY_STATE_INACTIVE
    after = harness.commands_since(before)
    assert after and after[-1][1] == [0.0, 0.0]  # the safe action goes out on deactivate
    time.sleep(3 * PERIOD_S)
    assert len(harness.commands_since(before)) == len(after)  # and the loop has stopped
    assert harness.transition(CLEANUP) and harness.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert harness.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert harness.state() == State.PRIMARY_STATE_FINALIZED


def test_sensor_subscriptions_follow_the_servers_remapping(start_server: Callable[..., Server], models: Models) -> None:
    """The JointState and goal subscriptions live on a helper node that ignores ``--ros-args``: it takes the
    topic names as the server resolved them, remapping included."""
    server = start_server(
        model_dir=str(models.certified),
        joint_states_topic="/arm/joint_states",
        goal_topic="/arm/goal",
        remaps=("/arm/joint_states:=/joint_states", "/arm/goal:=/goal"),
    )
    harness = server.harness
    assert harness.transition(CONFIGURE) and harness.transition(ACTIVATE)
    assert harness.wait_for(lambda: len(harness.commands) >= 20)
    expected = expected_torque(models.certified, [2.0, 0.3], (0.7, 0.0))
    np.testing.assert_allclose(harness.commands[-1][1], expected, atol=1e-6)  # the policy's, not the safe action


def test_joint_state_ticks_follow_the_sensor(start_server: Callable[..., Server], models: Models) -> None:
    """tick_source=joint_state: a tick per JointState (sensor at 100 Hz), not per control period (here 10 Hz)."""
    server = active(start_server, models.certified, tick_source="joint_state", control_hz=10.0, publish_trace=True)
    harness, sensor = server.harness, server.sensor
    published = len(sensor.stamps)
    assert harness.wait_for(lambda: len(sensor.stamps) >= published + 100)
    window = sensor.stamps[published : published + 100]
    assert harness.wait_for(lambda: bool(harness.traces) and harness.traces[-1] >= window[-1])
    # The JointStates that got a command of their own: a 10 Hz timer would serve about 10 % of them;
    # following the sensor serves nearly all (two arriving within one tick may share it under load).
    served = set(harness.traces) & set(window)
    assert len(served) >= 0.5 * len(window), f"{len(served)} of {len(window)} JointStates got a command"
    sensor.running.clear()  # no sensor: the fallback tick still runs the watchdog
    stopped = time.monotonic()
    assert server.harness.wait_for(lambda: any(c == [0.0, 0.0] for _, c in server.harness.commands_since(stopped)))


def test_inner_loop_holds_the_policy_action_and_checks_safety_every_tick(
    start_server: Callable[..., Server], models: Models
) -> None:
    """policy_hz: ticks at 200 Hz, the model at 20 Hz; the watchdog and the e-stop act on the next 200 Hz tick."""
    inner_hz, policy_hz, max_age_s = 200.0, 20.0, 0.05
    server = active(
        start_server,
        models.certified,
        control_hz=inner_hz,
        policy_hz=policy_hz,
        action_cutoff_hz=10.0,
        joint_state_max_age_s=max_age_s,
    )
    harness, sensor = server.harness, server.sensor
    first = harness.wait_for(lambda: _value(harness, "ticks") != "")
    ticks0, policy0 = float(_value(harness, "ticks")), float(_value(harness, "policy_ticks"))
    assert first and harness.wait_for(lambda: float(_value(harness, "ticks")) > ticks0 + 200)
    ticks, policy = float(_value(harness, "ticks")) - ticks0, float(_value(harness, "policy_ticks")) - policy0
    assert policy / ticks == pytest.approx(policy_hz / inner_hz, abs=0.02)  # the model every 10th tick
    # Constant inputs: the low-passed, held action settles on the policy's (limits applied every tick).
    expected = expected_torque(models.certified, [2.0, 0.3], (0.7, 0.0))
    settled = time.monotonic()
    assert harness.wait_for(
        lambda: any(np.allclose(c, expected, atol=1e-5) for _, c in harness.commands_since(settled))
    ), harness.commands[-1]
    sensor.running.clear()
    stopped = time.monotonic()
    assert harness.wait_for(lambda: any(c == [0.0, 0.0] for _, c in harness.commands_since(stopped)))
    assert harness.wait_for(lambda: _value(harness, "joint_state_trip_age_ms") != "")
    age_s, gap_s = (float(_value(harness, f"joint_state_{key}_ms")) / 1e3 for key in ("trip_age", "trip_tick_gap"))
    assert max_age_s < age_s <= max_age_s + gap_s + 1e-6
    # The tick that tripped came one inner period after the one before, not one policy period.
    assert gap_s <= 1.5 / inner_hz or float(_value(harness, "overruns")) > 0
    sensor.running.set()
    resumed = time.monotonic()
    assert harness.wait_for(lambda: any(c != [0.0, 0.0] for _, c in harness.commands_since(resumed)))
    harness.estop.publish(Bool(data=True))
    engaged = time.monotonic()
    assert harness.wait_for(lambda: any(c == [0.0, 0.0] for _, c in harness.commands_since(engaged)))
    time.sleep(0.3)
    late = harness.commands_since(time.monotonic() - 0.2)
    assert late and all(c == [0.0, 0.0] for _, c in late)  # no held policy action outlives the e-stop


@pytest.mark.parametrize("which", ["uncertified", "tampered"])
def test_uncertified_or_tampered_models_are_refused_at_configure(
    which: str, start_server: Callable[..., Server], models: Models
) -> None:
    server = start_server(model_dir=str(getattr(models, which)))
    assert not server.harness.transition(CONFIGURE)
    assert server.harness.state() == State.PRIMARY_STATE_UNCONFIGURED


def test_allow_uncertified_serves_with_a_warning(start_server: Callable[..., Server], models: Models) -> None:
    server = active(start_server, models.uncertified, allow_uncertified=True)
    assert server.harness.wait_for(lambda: server.harness.latest_status() is not None)
    status = server.harness.latest_status()
    assert level(status) == DiagnosticStatus.WARN[0] and "uncertified" in status.message


def test_missing_joint_in_joint_states_is_refused(start_server: Callable[..., Server], models: Models) -> None:
    server = start_server(model_dir=str(models.certified), joint_state_timeout_s=2.0)
    server.sensor.names = ("wrist",)  # JointStates keep arriving while configure waits, but lack both joints
    assert not server.harness.transition(CONFIGURE)
    assert server.harness.wait_for(lambda: "lacks joints ['shoulder', 'elbow']" in server.log_text()), server.log_text()


def test_watchdog_trips_within_one_period_and_recovers(start_server: Callable[..., Server], models: Models) -> None:
    max_age_s = 0.05
    server = active(start_server, models.certified, joint_state_max_age_s=max_age_s)
    harness, sensor = server.harness, server.sensor
    sensor.running.clear()
    stopped = time.monotonic()
    assert harness.wait_for(lambda: any(c == [0.0, 0.0] for _, c in harness.commands_since(stopped)))
    assert harness.wait_for(lambda: harness.latest_status() is not None and "stale" in harness.latest_status().message)
    assert level(harness.latest_status()) == DiagnosticStatus.ERROR[0]
    # On the node's own clock: the safe action went out on the first tick that saw a stale JointState,
    # i.e. within max age + one period of its own loop (a longer gap between ticks is a counted overrun).
    age_s, gap_s = (float(_value(harness, f"joint_state_{key}_ms")) / 1e3 for key in ("trip_age", "trip_tick_gap"))
    assert max_age_s < age_s <= max_age_s + gap_s + 1e-6
    assert gap_s <= 1.5 * PERIOD_S or float(_value(harness, "overruns")) > 0
    sensor.running.set()
    resumed = time.monotonic()
    assert harness.wait_for(lambda: any(c != [0.0, 0.0] for _, c in harness.commands_since(resumed)))
    assert harness.wait_for(lambda: level(harness.latest_status()) == DiagnosticStatus.OK[0])


def test_nan_inputs_give_the_safe_action(start_server: Callable[..., Server], models: Models) -> None:
    server = active(start_server, models.certified, safe_action="damping", damping_gain=0.5)
    harness, sensor = server.harness, server.sensor
    sensor.position = [float("nan"), 2.0]
    sensor.velocity = [1.0, -2.0]  # elbow, shoulder
    since = time.monotonic()
    # Damping on the (finite) velocities: τ = -0.5·q̇ in contract order (shoulder, elbow).
    assert harness.wait_for(lambda: any(c == [1.0, -0.5] for _, c in harness.commands_since(since)))
    assert harness.wait_for(lambda: int(_value(harness, "nan_inputs") or 0) > 0)
    sensor.position = [0.3, 2.0]
    since = time.monotonic()
    assert harness.wait_for(lambda: any(c not in ([1.0, -0.5],) for _, c in harness.commands_since(since)))


def test_nan_from_the_model_gives_the_safe_action(start_server: Callable[..., Server], models: Models) -> None:
    server = start_server(model_dir=str(models.nan_output), allow_uncertified=True)
    harness = server.harness
    assert harness.transition(CONFIGURE) and harness.transition(ACTIVATE)
    assert harness.wait_for(lambda: len(harness.commands) > 5)
    assert all(c == [0.0, 0.0] for _, c in harness.commands)
    assert harness.wait_for(lambda: int(_value(harness, "nan_outputs") or 0) > 0)
    assert "NaN/inf from the model" in _value(harness, "last_safe_reason")


def test_estop_latches_until_the_reset_service(start_server: Callable[..., Server], models: Models) -> None:
    server = active(start_server, models.certified)
    harness = server.harness
    harness.estop.publish(Bool(data=True))
    engaged = time.monotonic()
    assert harness.wait_for(lambda: any(c == [0.0, 0.0] for _, c in harness.commands_since(engaged)))
    harness.estop.publish(Bool(data=False))  # does not clear it
    time.sleep(0.3)
    late = harness.commands_since(time.monotonic() - 0.2)
    assert late and all(c == [0.0, 0.0] for _, c in late)
    assert harness.wait_for(lambda: harness.latest_status() is not None and "e-stop" in harness.latest_status().message)
    response = harness.reset_estop()
    assert response.success and "cleared" in response.message
    cleared = time.monotonic()
    assert harness.wait_for(lambda: any(c != [0.0, 0.0] for _, c in harness.commands_since(cleared)))


def test_hot_swap_under_a_running_loop_and_a_failed_swap_keeps_the_model(
    start_server: Callable[..., Server], models: Models
) -> None:
    server = active(start_server, models.certified)
    harness = server.harness
    assert harness.wait_for(lambda: _value(harness, "skipped_ticks") != "")
    skipped, safe = _value(harness, "skipped_ticks"), _value(harness, "safe_ticks")
    harness.set_model_dir(models.certified_other)
    start = time.monotonic()
    response = harness.swap()
    assert response.success, response.message
    other = PolicyModel(models.certified_other, allow_uncertified=True).onnx_sha256
    assert harness.wait_for(lambda: _value(harness, "model_sha256") == other)
    end = time.monotonic()
    # No missed tick while loading and swapping: the loop's own count, and the commands that arrived.
    assert _value(harness, "skipped_ticks") == skipped
    assert len(harness.commands_since(start)) >= (end - start) / PERIOD_S - 3
    # And no safe tick: fresh JointStates kept arriving while the service loaded the model.
    assert _value(harness, "safe_ticks") == safe
    harness.set_model_dir(models.tampered)
    failed = harness.swap()
    assert not failed.success and "does not match the contract" in failed.message
    assert harness.wait_for(lambda: "refused" in _value(harness, "swap"))
    assert _value(harness, "model_sha256") == other
    since = time.monotonic()
    assert harness.wait_for(lambda: len(harness.commands_since(since)) > 10)


def test_node_imports_no_torch_pybullet_minari_or_sigstore() -> None:
    heavy = "{'torch', 'pybullet', 'minari', 'model_signing', 'sigstore', 'OpenSSL', 'pipeline'}"
    code = f"import sys, symgate_ros.policy_server; print(sorted({heavy} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _value(harness: Harness, key: str) -> str:
    status = harness.latest_status()
    if status is None:
        return ""
    return str({kv.key: kv.value for kv in status.values}.get(key, ""))


@pytest.fixture
def position_model(models: Models, tmp_path: Path) -> Path:
    """The uncertified model with a contract of position targets (its graph is the torque one's: not served)."""
    model = tmp_path / "position_model"
    shutil.copytree(models.uncertified, model)
    contract = json.loads((model / "contract.json").read_text())
    (model / "contract.json").write_text(json.dumps({**contract, "action_interface": "position"}))
    return model


def test_position_contracts_refuse_a_zero_safe_action(
    start_server: Callable[..., Server], position_model: Path
) -> None:
    """A zero position target would drive the arm to its zero pose."""
    server = start_server(model_dir=str(position_model), allow_uncertified=True)
    assert not server.harness.transition(CONFIGURE)
    assert server.harness.wait_for(
        lambda: "safe_action 'zero' is not safe for position targets: use one of ['hold']" in server.log_text()
    ), server.log_text()


def test_position_contracts_hold_the_measured_pose(start_server: Callable[..., Server], position_model: Path) -> None:
    server = active(start_server, position_model, allow_uncertified=True, safe_action="hold")
    harness = server.harness
    harness.estop.publish(Bool(data=True))
    engaged = time.monotonic()
    held = [server.sensor.position[1], server.sensor.position[0]]  # contract order (shoulder, elbow)
    assert harness.wait_for(lambda: any(c == held for _, c in harness.commands_since(engaged)))


def test_observation_components_the_node_cannot_feed_are_refused_at_configure(
    start_server: Callable[..., Server], models: Models, tmp_path: Path
) -> None:
    """Every component must name a contract joint's JointState field or a goal axis."""
    model = tmp_path / "unfed_model"
    shutil.copytree(models.uncertified, model)
    contract = json.loads((model / "contract.json").read_text())
    names = [n.replace("joint_velocity.elbow", "joint_velocity.wrist") for n in contract["observation_names"]]
    contract["inputs"][0]["components"] = names
    (model / "contract.json").write_text(json.dumps(contract))
    server = start_server(model_dir=str(model), allow_uncertified=True)
    assert not server.harness.transition(CONFIGURE)
    assert server.harness.wait_for(
        lambda: "observation components ['joint_velocity.wrist'] cannot be fed" in server.log_text()
    ), server.log_text()
