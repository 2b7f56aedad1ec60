"""Ingestion for robot profiles from bags an independent logger wrote: the KUKA iiwa, 7 joints.

Each bag is written here with ``rosbags``' own Writer from a known ground truth: a smooth joint
trajectory logged as a 100 Hz ``JointState`` (epoch stamps, logged 0.5–3 ms late), one command per
20 Hz control tick (the profile's rate), no markers and no reward: one file is one demonstration, as
teleoperation logs come. The commands are either a leader arm's ``JointState`` positions (for a
profile taking position targets) or end-effector ``Twist`` commands (MoveIt Servo style, for the
iiwa's velocity targets), and the dataset's actions are compared with the truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import minari
import numpy as np
import pytest
import yaml
from numpy.typing import NDArray
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.ingest import IngestConfig, IngestError, ingest
from pipeline.ingest.config import config_for_robot
from pipeline.io import load_config
from sim.robots.profile import Robot, load_profile, profile_path

NS = 1_000_000_000
MS = 1_000_000
EPOCH = 1_780_000_000 * NS
PERIOD = 50 * MS  # the iiwa profile's 20 Hz control
STATE_PERIOD = 10 * MS
STEPS = 30
DATASET_ID = "symgate/iiwa-teleop-v0"
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
JOINT_STATE, POINT = "sensor_msgs/msg/JointState", "geometry_msgs/msg/PointStamped"
TWIST, TWIST_STAMPED = "geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


@pytest.fixture(scope="module")
def iiwa() -> Robot:
    return load_profile("kuka_iiwa")


def follower(robot: Robot, t_ns: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The follower arm's joint positions and velocities at ``t_ns``: a smooth sweep around the start pose."""
    t = ((t_ns - EPOCH) / NS).astype(np.float64)[:, None]
    base = np.radians([-46.0, 17.0, 0.0, -92.0, 0.0, 46.0, 0.0])
    rates = 1.0 + 0.3 * np.arange(len(robot.joint_names), dtype=np.float64)
    return base + 0.2 * np.sin(rates * t), 0.2 * rates * np.cos(rates * t)


def _stamp(t_ns: int) -> Any:
    return TYPESTORE.types["builtin_interfaces/msg/Time"](sec=t_ns // NS, nanosec=t_ns % NS)


def write_demo(
    path: Path, robot: Robot, commands: list[tuple[str, str, Any]], seed: int = 0, goal: bool = True
) -> NDArray[np.int64]:
    """One demonstration bag: the follower's JointState, a latched goal (or none), and (topic, type, msgs) commands.

    Returns:
        The control ticks t_0 … t_STEPS the commands were sent on.
    """
    rng = np.random.default_rng(seed)
    types = TYPESTORE.types
    ticks = EPOCH + PERIOD * np.arange(STEPS + 1, dtype=np.int64)
    stamps = np.arange(EPOCH - 3 * MS, int(ticks[-1]) + 40 * MS, STATE_PERIOD, dtype=np.int64)
    positions, velocities = follower(robot, stamps)
    messages: list[tuple[int, str, Any]] = []
    for stamp, position, velocity in zip(stamps, positions, velocities, strict=True):
        state = types[JOINT_STATE](
            header=types["std_msgs/msg/Header"](stamp=_stamp(int(stamp)), frame_id=""),
            name=list(robot.joint_names),
            position=position,
            velocity=velocity,
            effort=np.array([], dtype=np.float64),
        )
        messages.append((int(stamp) + round(rng.uniform(0.5, 3.0) * MS), "/joint_states", state))
    msgtypes = {"/joint_states": JOINT_STATE}
    if goal:
        point = types[POINT](
            header=types["std_msgs/msg/Header"](stamp=_stamp(EPOCH - 100 * MS), frame_id="lbr_iiwa_link_0"),
            point=types["geometry_msgs/msg/Point"](x=0.55, y=0.0, z=0.5),
        )
        messages.append((EPOCH - 99 * MS, "/goal", point))
        msgtypes["/goal"] = POINT
    for topic, msgtype, sent in commands:
        msgtypes[topic] = msgtype
        messages += [(log_ns + round(rng.uniform(0.5, 3.0) * MS), topic, msg) for log_ns, msg in sent]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {topic: writer.add_connection(topic, t, typestore=TYPESTORE) for topic, t in msgtypes.items()}
        for log_ns, topic, message in sorted(messages, key=lambda m: m[0]):
            writer.write(connections[topic], log_ns, TYPESTORE.serialize_cdr(message, msgtypes[topic]))
    return ticks


def demonstration_config(robot: str, action: dict[str, Any], **extra: Any) -> IngestConfig:
    """The profile's default mapping with another action source, one episode per file and no reward."""
    base = config_for_robot(robot).model_dump(mode="json")
    base.update(action=action, reward={"kind": "none"}, **extra)
    base["episodes"].update(segment_by="file", marker_topic=None)
    return IngestConfig.model_validate(base)


def write_servo_demo(path: Path, robot: Robot, goal: bool = True, msgtype: str = TWIST) -> NDArray[np.float64]:
    """A demonstration commanded by end-effector twists (MoveIt Servo's ``Twist`` or ``TwistStamped``), 20 Hz.

    Each tick's twist is v_k = J(q_k)·q̇_k for a random q̇_k in the row space of J (the smallest-norm
    joint velocity with that twist), at the follower's joint positions q_k.

    Returns:
        The q̇_k, shape ``(STEPS, joints)``.
    """
    rng = np.random.default_rng(1)
    link = robot.profile.task.end_effector
    ticks = EPOCH + PERIOD * np.arange(STEPS, dtype=np.int64)
    positions, _ = follower(robot, ticks)
    true_velocity = []
    sent = []
    vector = TYPESTORE.types["geometry_msgs/msg/Vector3"]
    for tick, q in zip(ticks, positions, strict=True):
        _, jacobian = robot.kinematics.jacobian(link, q)
        q_dot = jacobian.T @ rng.uniform(-0.4, 0.4, size=3)
        v = jacobian @ q_dot
        true_velocity.append(q_dot)
        twist = TYPESTORE.types[TWIST](linear=vector(x=v[0], y=v[1], z=v[2]), angular=vector(x=0.0, y=0.0, z=0.0))
        if msgtype == TWIST_STAMPED:
            header = TYPESTORE.types["std_msgs/msg/Header"](stamp=_stamp(int(tick)), frame_id="lbr_iiwa_link_0")
            twist = TYPESTORE.types[TWIST_STAMPED](header=header, twist=twist)
        sent.append((int(tick), twist))
    write_demo(path, robot, [("/servo/twist", msgtype, sent)], goal=goal)
    return np.asarray(true_velocity)


def assert_twist_actions(
    actions: NDArray[np.float64], true_velocity: NDArray[np.float64], robot: Robot, min_steps: int = STEPS - 1
) -> None:
    """The actions are the q̇_k the twists were made from, within the joint-position interpolation's error.

    (And within the damping's: λ = 0.01 moves q̇ by about λ²/σ² ≈ 1e-3 of itself for the singular values σ ≳ 0.3 here.)
    """
    steps = len(actions)
    assert steps >= min_steps
    np.testing.assert_allclose(actions, true_velocity[:steps], atol=2e-3, rtol=0)
    positions, _ = follower(robot, EPOCH + PERIOD * np.arange(steps, dtype=np.int64))
    for q, q_dot, wanted in zip(positions, actions, true_velocity, strict=False):
        _, jacobian = robot.kinematics.jacobian(robot.profile.task.end_effector, q)
        np.testing.assert_allclose(jacobian @ q_dot, jacobian @ wanted, atol=1e-3)


@pytest.mark.parametrize("msgtype", [TWIST, TWIST_STAMPED])
def test_twist_commands_become_the_profiles_joint_velocity_targets(
    tmp_path: Path, root: Path, iiwa: Robot, msgtype: str
) -> None:
    """Each tick's twist v_k = J(q_k)·q̇_k of a known q̇_k in J's row space comes back as q̇_k (damping 0)."""
    true_velocity = write_servo_demo(tmp_path / "bags" / "servo_0", iiwa, msgtype=msgtype)
    prefix = "twist." if msgtype == TWIST_STAMPED else ""
    action = {
        "joint_velocity_target": {
            "topic": "/servo/twist",
            "msgtype": msgtype,
            "components": [f"{prefix}linear.{axis}" for axis in "xyz"],
            "time_base": "log" if msgtype == TWIST else "header",
            "resample": "last_value",
            "unit": "m/s",
        }
    }
    config = demonstration_config("kuka_iiwa", action, twist={"damping": 0.0})
    ingest([tmp_path / "bags"], config, DATASET_ID, workers=1)
    (episode,) = minari.load_dataset(DATASET_ID).iterate_episodes()
    assert_twist_actions(np.asarray(episode.actions, dtype=np.float64), true_velocity, iiwa)


def test_angular_twist_rows_use_the_geometric_jacobian(iiwa: Robot) -> None:
    """A joint rotation about its axis a gives ω = a; the angular rows are each revolute joint's world axis."""
    q = np.radians([-46.0, 17.0, 10.0, -92.0, 5.0, 46.0, 20.0])
    _, jacobian = iiwa.kinematics.jacobian(iiwa.profile.task.end_effector, q, angular=True)
    assert jacobian.shape == (6, 7)
    np.testing.assert_allclose(np.linalg.norm(jacobian[3:], axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(jacobian[3:, 0], [0.0, 0.0, 1.0], atol=1e-12)  # joint 1 turns about base z
    _, linear = iiwa.kinematics.jacobian(iiwa.profile.task.end_effector, q)
    np.testing.assert_array_equal(jacobian[:3], linear)


def test_twist_needs_a_velocity_profile_and_twist_components() -> None:
    action = {
        "joint_velocity_target": {
            "topic": "/servo/twist",
            "msgtype": TWIST,
            "components": ["linear.x", "linear.w"],
            "time_base": "log",
            "resample": "last_value",
            "unit": "m/s",
        }
    }
    with pytest.raises(ValueError, match=r"twist: the action's components must be among .*linear\.w"):
        demonstration_config("kuka_iiwa", action, twist={})
    with pytest.raises(ValueError, match="twist: robot 'reacher' takes effort targets, not velocity"):
        IngestConfig.model_validate({**config_for_robot("reacher").model_dump(mode="json"), "twist": {}})


def position_profile(tmp_path: Path) -> Path:
    """The iiwa taking joint position targets (a JointGroupPositionController): a profile, no code."""
    data = yaml.safe_load(profile_path("kuka_iiwa").read_text())
    data.update(name="kuka_iiwa_position")
    data["action"] = {"interface": "position"}
    data["ros"]["controller_commands"] = "/position_controller/commands"
    path = tmp_path / "kuka_iiwa_position" / "robot.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    return path


def test_leader_arm_positions_are_the_position_targets(tmp_path: Path, root: Path, iiwa: Robot) -> None:
    """Teleoperation: the leader's JointState positions (in another joint order) are the follower's targets.

    The log has no goal, no markers and no reward: one file is one demonstration, and its goal is
    where the end effector ends (hindsight).
    """
    profile = position_profile(tmp_path)
    leader_order = list(reversed(iiwa.joint_names))
    ticks = EPOCH + PERIOD * np.arange(STEPS, dtype=np.int64)
    targets, _ = follower(iiwa, ticks + PERIOD)  # the leader runs one control period ahead of the follower
    targets[::5, 3] -= 1.0  # every fifth target asks joint 4 past its -120° limit: clipped and counted
    sent = [
        (
            int(tick),
            TYPESTORE.types[JOINT_STATE](
                header=TYPESTORE.types["std_msgs/msg/Header"](stamp=_stamp(int(tick)), frame_id=""),
                name=leader_order,
                position=target[::-1].copy(),
                velocity=np.array([], dtype=np.float64),
                effort=np.array([], dtype=np.float64),
            ),
        )
        for tick, target in zip(ticks, targets, strict=True)
    ]
    write_demo(tmp_path / "bags" / "teleop_0", iiwa, [("/leader/joint_states", JOINT_STATE, sent)], goal=False)
    action = {
        "joint_position_target": {
            "topic": "/leader/joint_states",
            "msgtype": JOINT_STATE,
            "path": "position",
            "joints": list(iiwa.joint_names),
            "time_base": "header",
            "resample": "last_value",
            "unit": "rad",
        }
    }
    mapped = config_for_robot(str(profile)).observations
    state = {name: mapped[name].model_dump(mode="json") for name in ("joint_position", "joint_velocity")}
    config = demonstration_config(str(profile), action, observations=state, hindsight_goal={})
    _, report = ingest([tmp_path / "bags"], config, DATASET_ID, workers=1)
    dataset = minari.load_dataset(DATASET_ID)
    (episode,) = dataset.iterate_episodes()
    actions = np.asarray(episode.actions, dtype=np.float64)
    low, high = load_profile(profile).action_limits()
    np.testing.assert_allclose(actions, np.clip(targets, low, high)[: len(actions)].astype(np.float32), atol=0)
    clipped = int((targets[: len(actions)] < low).any(axis=1).sum())
    assert clipped > 0
    assert report.bags[0].episodes[0].actions_clipped == clipped
    # The goal: FK of the last tick's joint positions, the truth's within interpolation error (≤ 2 mm).
    observations = np.asarray(episode.observations, dtype=np.float64)
    last_tick = EPOCH + PERIOD * len(actions)
    _, final = iiwa.forward_kinematics(follower(iiwa, np.array([last_tick]))[0][0])
    np.testing.assert_allclose(observations[:, -3:], np.tile(final, (len(observations), 1)), atol=2e-3)
    env = dataset.recover_environment(eval_env=True)  # the dataset names the position profile's env
    try:
        assert env.unwrapped.profile.action.interface == "position"
        assert env.action_space.contains(actions[0].astype(np.float32))
    finally:
        env.close()


def test_hindsight_goal_needs_a_profile_and_an_unlogged_goal() -> None:
    with pytest.raises(ValueError, match="hindsight_goal: the end effector's forward kinematics need a robot profile"):
        IngestConfig.model_validate({"hindsight_goal": {}})
    with pytest.raises(ValueError, match="hindsight_goal: field 'goal_position' is also mapped from a topic"):
        IngestConfig.model_validate({**config_for_robot("kuka_iiwa").model_dump(mode="json"), "hindsight_goal": {}})


def test_unlogged_goal_without_markers_asks_for_another_segmentation(tmp_path: Path, root: Path, iiwa: Robot) -> None:
    """Markers are the default segmentation; a bag without them would fall back to goal changes, which it lacks."""
    ticks = EPOCH + PERIOD * np.arange(STEPS, dtype=np.int64)
    array = TYPESTORE.types["std_msgs/msg/Float64MultiArray"]
    layout = TYPESTORE.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    sent = [(int(t), array(layout=layout, data=np.zeros(7))) for t in ticks]
    write_demo(
        tmp_path / "bags" / "no_goal", iiwa, [("/joint_commands", "std_msgs/msg/Float64MultiArray", sent)], goal=False
    )
    base = config_for_robot("kuka_iiwa").model_dump(mode="json")
    del base["observations"]["goal_position"]
    config = IngestConfig.model_validate({**base, "hindsight_goal": {}, "reward": {"kind": "none"}})
    with pytest.raises(IngestError, match=r"no_goal: no episode markers on /episode .* set episodes.segment_by"):
        ingest([tmp_path / "bags"], config, DATASET_ID, workers=1)
    assert not root.exists() or not any(root.rglob("*"))


def test_inspect_with_the_profile_drafts_a_mapping_that_needs_no_edit(tmp_path: Path, root: Path, iiwa: Robot) -> None:
    """A servo log without goal or markers: the profile-aware draft (twist, hindsight goal, one file) ingests as is."""
    true_velocity = write_servo_demo(tmp_path / "bags" / "servo_0", iiwa, goal=False)
    draft = tmp_path / "draft.yaml"
    result = CliRunner().invoke(
        app, ["ingest", "inspect", str(tmp_path / "bags"), "--draft", str(draft), "--robot", "kuka_iiwa"]
    )
    assert result.exit_code == 0, result.output
    text = draft.read_text()
    assert "twist: {damping: 0.01}" in text and "hindsight_goal: {}" in text and "segment_by: file" in text
    config = load_config(draft, IngestConfig)
    _, report = ingest([tmp_path / "bags"], config, DATASET_ID, workers=1)
    (episode_report,) = report.bags[0].episodes  # reach: the first tick within the radius of the final position
    assert episode_report.reason == "reached"
    (episode,) = minari.load_dataset(DATASET_ID).iterate_episodes()
    assert_twist_actions(np.asarray(episode.actions, dtype=np.float64), true_velocity, iiwa, min_steps=1)
