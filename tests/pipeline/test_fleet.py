import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from pipeline.fleet import MANIFEST, FleetConfig, FleetManifest, record_fleet
from pipeline.io import sha256_file
from sim.reacher import PhysicsSample, RotationalReacherEnv
from tests.conftest import small_fleet_config

EXPECTED_TYPES = {
    "/joint_states": "sensor_msgs/msg/JointState",
    "/goal": "geometry_msgs/msg/PointStamped",
    "/joint_commands": "std_msgs/msg/Float64MultiArray",
    "/episode": "std_msgs/msg/String",
}


def _read(bag: Path) -> dict[str, list[tuple[int, object]]]:
    """All messages of a bag, decoded, per topic: (log time, message)."""
    messages: dict[str, list[tuple[int, object]]] = defaultdict(list)
    with AnyReader([bag]) as reader:
        for connection, timestamp, raw in reader.messages():
            messages[connection.topic].append((timestamp, reader.deserialize(raw, connection.msgtype)))
    return messages


def _stamp(message: object) -> int:
    stamp = message.header.stamp  # type: ignore[attr-defined]
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def test_bags_open_with_anyreader_with_types_and_counts(recorded_fleet: tuple[Path, FleetManifest]) -> None:
    out, manifest = recorded_fleet
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "robot_000", "robot_001"]
    for session in manifest.sessions:
        bag = out / session.robot
        with AnyReader([bag]) as reader:
            assert {c.topic: c.msgtype for c in reader.connections} == EXPECTED_TYPES
            assert {c.topic: c.msgcount for c in reader.connections} == session.message_counts
        assert session.files == {f.name: sha256_file(f) for f in bag.iterdir()}
        assert session.storage == manifest.config.storage


def test_topics_carry_what_a_real_robot_logs(recorded_fleet: tuple[Path, FleetManifest]) -> None:
    out, manifest = recorded_fleet
    session = manifest.sessions[0]
    messages = _read(out / session.robot)
    states = [m for _, m in messages["/joint_states"]]
    assert all(list(m.name) == session.joint_order for m in states)  # type: ignore[attr-defined]
    stamps = np.array([_stamp(m) for m in states])
    assert np.all(np.diff(stamps) > 0)
    periods = np.diff(stamps) / 1e9
    assert 190 < 1 / periods.mean() < 205 and periods.std() > 1e-4  # ~200 Hz, jittered by the 250 Hz physics grid
    log_times = np.array([t for t, _ in messages["/joint_states"]])
    assert np.all((log_times - stamps >= 500_000) & (log_times - stamps <= 3_000_000))  # transport latency
    events = [json.loads(m.data) for _, m in messages["/episode"]]  # type: ignore[attr-defined]
    assert [e["event"] for e in events] == ["start", "end"] * len(session.episodes)
    assert [e.get("controller") for e in events[::2]] == [e.controller for e in session.episodes]
    assert [e["reason"] for e in events[1::2]] == ["success" if e.success else "time_limit" for e in session.episodes]
    commands = [m for _, m in messages["/joint_commands"]]
    assert len(commands) == sum(e.steps for e in session.episodes)
    assert all(len(m.data) == 2 and np.all(np.abs(m.data) <= 2.0) for m in commands)  # type: ignore[attr-defined]
    goals = [m for _, m in messages["/goal"]]
    assert [m.header.frame_id for m in goals] == ["base_link"] * len(session.episodes)  # type: ignore[attr-defined]
    for goal, episode in zip(goals, session.episodes, strict=True):
        bearing = math.degrees(math.atan2(goal.point.y, goal.point.x))  # type: ignore[attr-defined]
        assert math.isclose(bearing, episode.context_deg, abs_tol=1e-9)


def test_joint_states_match_the_simulator_at_their_stamps(recorded_fleet: tuple[Path, FleetManifest]) -> None:
    """Replay each episode's logged commands in a fresh env: every logged state is the simulator's."""
    out, manifest = recorded_fleet
    env = RotationalReacherEnv(manifest.config.env)
    physics_ns = 1e9 / env.config.physics_hz
    samples: list[PhysicsSample] = []
    env.add_physics_listener(samples.append)
    for session in manifest.sessions:
        messages = _read(out / session.robot)
        states = {_stamp(m): m for _, m in messages["/joint_states"]}
        commands = iter(m.data for _, m in messages["/joint_commands"])  # type: ignore[attr-defined]
        goal_stamps = [_stamp(m) for _, m in messages["/goal"]]
        checked = 0
        for episode, goal_ns in zip(session.episodes, goal_stamps, strict=True):
            samples.clear()
            env.reset(seed=episode.reset_seed, options={"context": math.radians(episode.context_deg)})
            start = env.joint_state()
            for _ in range(episode.steps):
                env.step(np.asarray(next(commands)))
            trajectory = {episode.start_ns + round(s.physics_step * physics_ns): s for s in samples}
            for stamp, message in states.items():
                by_name = dict(zip(message.name, zip(message.position, message.velocity, strict=True), strict=True))  # type: ignore[attr-defined]
                logged = np.array([by_name[joint] for joint in env.robot.joint_names])
                if goal_ns <= stamp < episode.start_ns:  # homing: the arm waits at its start pose
                    expected = np.stack([start.joint_position, start.joint_velocity], axis=1)
                elif episode.start_ns < stamp <= episode.end_ns:
                    sample = trajectory[stamp]
                    expected = np.stack([sample.joint_position, sample.joint_velocity], axis=1)
                else:
                    continue
                np.testing.assert_array_equal(logged, expected)
                checked += 1
        assert checked > 0.9 * len(states)


def test_recording_does_not_depend_on_worker_count(tmp_path: Path) -> None:
    config = small_fleet_config(robots=2, episodes=2)
    inline = record_fleet(config, tmp_path / "inline", workers=1)
    parallel = record_fleet(config, tmp_path / "parallel", workers=2)
    assert inline.model_dump() == parallel.model_dump()


def test_robots_differ_and_joint_order_is_per_robot(recorded_fleet: tuple[Path, FleetManifest]) -> None:
    _, manifest = recorded_fleet
    first, second = manifest.sessions
    assert first.files != second.files
    assert {tuple(s.joint_order) for s in manifest.sessions} <= {("shoulder", "elbow"), ("elbow", "shoulder")}
    assert [e.controller for e in first.episodes] == ["expert", "expert", "suboptimal"]


def test_existing_output_is_never_overwritten_silently(tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        record_fleet(small_fleet_config(robots=1, episodes=1), out, workers=1)
    assert (out / "precious.txt").read_text() == "keep me"
    record_fleet(small_fleet_config(robots=1, episodes=1), out, workers=1, overwrite=True)
    assert not (out / "precious.txt").exists() and (out / MANIFEST).exists()


def test_a_failure_mid_recording_leaves_nothing_behind(tmp_path: Path) -> None:
    finished: list[int] = []

    def crash_after_two() -> None:
        finished.append(1)
        if len(finished) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        record_fleet(
            small_fleet_config(robots=2, episodes=2), tmp_path / "fleet", workers=1, on_episode=crash_after_two
        )
    assert list(tmp_path.iterdir()) == []


def test_manifest_round_trips(recorded_fleet: tuple[Path, FleetManifest]) -> None:
    out, manifest = recorded_fleet
    assert FleetManifest.model_validate_json((out / MANIFEST).read_text()) == manifest
    assert isinstance(manifest.config, FleetConfig)


def test_invalid_fleet_configs_name_the_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"transport_latency_s\n.*need 0 <= low <= high"):
        FleetConfig.model_validate({"sensor": {"transport_latency_s": (0.003, 0.001)}})
    with pytest.raises(ValidationError, match="must exceed env.control_hz"):
        FleetConfig.model_validate({"sensor": {"joint_state_hz": 40.0}})
