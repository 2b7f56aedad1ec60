"""Ingestion of bags written by an independent logger: ``rosbags``' own Writer, not our fleet recorder.

Each bag is written here from a known ground truth: a smooth joint trajectory, sampled by a
JointState stream at 100 Hz (joints listed as ``[elbow, wrist_unused, shoulder]``, epoch header
stamps, every message logged 0.5–3 ms after its stamp), one command per 50 Hz control tick (logged
0.5–3 ms late), a latched goal and start/end markers logged 0.5–5 ms late, as a real logger does.
Every ingested value is compared with that truth, or the bag is refused with a message naming
bag, topic, field and time, and nothing is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import minari
import numpy as np
import pytest
from numpy.typing import NDArray
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from pipeline.ingest import IngestConfig, IngestError, QualityReport, ingest

NS = 1_000_000_000
MS = 1_000_000
DATASET_ID = "symgate/other-logger-v0"
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
JOINT_STATE, MULTI_ARRAY, POINT, STRING, BOOL = (
    "sensor_msgs/msg/JointState",
    "std_msgs/msg/Float64MultiArray",
    "geometry_msgs/msg/PointStamped",
    "std_msgs/msg/String",
    "std_msgs/msg/Bool",
)
LOGGED_NAMES = ("elbow", "wrist_unused", "shoulder")
PERIOD = 20 * MS  # 50 Hz control, the default ingest config's
STATE_PERIOD = 10 * MS  # 100 Hz joint states
EPOCH = 1_780_000_000 * NS  # wall-clock stamps
STATE_PHASE = -3 * MS  # JointState stamps fall 3 ms before each control tick, never on it
GOAL = (0.0, -0.7)  # never reached by the trajectory below: no reward, every episode ends at its end marker


def truth(t_ns: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Ground-truth (shoulder, elbow) positions and velocities at ``t_ns``: fast enough that extrapolation shows."""
    t = (t_ns - EPOCH) / NS
    position = np.stack([0.3 + 0.6 * np.sin(3.0 * t), -0.5 + 0.4 * np.cos(2.5 * t)], axis=1)
    velocity = np.stack([1.8 * np.cos(3.0 * t), -1.0 * np.sin(2.5 * t)], axis=1)
    return position, velocity


@dataclass
class TruthEpisode:
    """What the logger was told happened in one episode."""

    ticks: NDArray[np.int64]  # t_0 … t_N
    commands: NDArray[np.float64]  # (N, 2) shoulder, elbow torque for [t_k, t_k + T)


@dataclass
class LoggedBag:
    """A bag written by the independent writer and its ground truth."""

    path: Path
    episodes: list[TruthEpisode]
    state_stamps: NDArray[np.int64]  # every JointState header stamp written


def _late(rng: np.random.Generator, low_ms: float, high_ms: float) -> int:
    return round(rng.uniform(low_ms, high_ms) * MS)


def write_teleop_like_bag(
    path: Path,
    *,
    seed: int = 0,
    episodes: int = 4,
    steps: int = 60,
    command_width: int = 2,
    state_gaps: tuple[tuple[int, int], ...] = (),
    names: bool = True,
    leader_names: tuple[str, ...] | None = None,
    header_clock_ns: int = 0,
    markers: bool = True,
    idle_commands: bool = False,
    end_reasons: Sequence[str] = (),
    success_ticks: dict[int, int] | None = None,
    success_msgtype: str = BOOL,
    trajectory_chunk: int | None = None,
) -> LoggedBag:
    """Write a rosbag2 (MCAP) with rosbags' Writer from a known trajectory; return the truth.

    Args:
        path: Bag folder to create.
        seed: Seeds every latency and command.
        episodes: Episodes, each ``steps`` control steps, 0.5 s apart (states keep flowing between them).
        steps: Control steps per episode.
        command_width: Values per command array (2 matches the mapping).
        state_gaps: ``(episode, tick)`` pairs: JointState goes silent for 0.3 s from that tick.
        names: False: JointState name arrays are empty (entries in ``LOGGED_NAMES`` order all the same).
        leader_names: Commands as a leader arm's JointState (``/leader/joint_states``, efforts, these joints,
            stamped at the tick) instead of a Float64MultiArray.
        header_clock_ns: Subtracted from every header stamp (a simulation clock; log time stays wall clock).
        markers: False: no /episode topic at all.
        idle_commands: Between episodes, keep publishing an unchanged zero command at 50 Hz (an idle operator).
        end_reasons: Per episode, the end marker's ``reason``.
        success_ticks: Episode → tick at which ``/task_status`` reports success (Bool true or String "success"),
            logged 0.5–3 ms after the tick; a failure (false / "running") is published at tick 5 of every episode.
        success_msgtype: The type of ``/task_status``.
        trajectory_chunk: Commands as ``/joint_trajectory`` (JointTrajectory, joints ``[elbow, shoulder]``,
            efforts): every this many ticks a trajectory from that tick with 3 extra points of a wrong value
            (99) that the next trajectory replaces.
    """
    rng = np.random.default_rng(seed)
    types = TYPESTORE.types
    messages: list[tuple[int, str, Any]] = []  # (log_ns, topic, message)

    def header(stamp: int) -> Any:
        stamp -= header_clock_ns
        return types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=stamp // NS, nanosec=stamp % NS), frame_id="base"
        )

    truths, silent = [], []
    start = EPOCH + 500 * MS
    for index in range(episodes):
        ticks = start + PERIOD * np.arange(steps + 1, dtype=np.int64)
        commands = rng.uniform(-1.9, 1.9, size=(steps, 2))
        truths.append(TruthEpisode(ticks, commands))
        for event, tick in (("start", ticks[0]), ("end", ticks[-1])) if markers else ():
            payload = {"event": event, **({"reason": end_reasons[index]} if event == "end" and end_reasons else {})}
            marker = types[STRING](data=json.dumps(payload))
            messages.append((int(tick) + _late(rng, 0.5, 5.0), "/episode", marker))
        if success_ticks is not None:
            reports = [(5, False), *([(success_ticks[index], True)] if index in success_ticks else [])]
            for tick_index, ok in reports:
                status = types[success_msgtype](
                    data=ok if success_msgtype == BOOL else ("success" if ok else "running")
                )
                messages.append((int(ticks[tick_index]) + _late(rng, 0.5, 3.0), "/task_status", status))
        for first in range(0, steps, trajectory_chunk) if trajectory_chunk else ():
            points = [
                types["trajectory_msgs/msg/JointTrajectoryPoint"](
                    positions=np.array([], dtype=np.float64),
                    velocities=np.array([], dtype=np.float64),
                    accelerations=np.array([], dtype=np.float64),
                    effort=commands[k][::-1].copy()
                    if k < steps and k < first + (trajectory_chunk or 0)
                    else np.full(2, 99.0),
                    time_from_start=types["builtin_interfaces/msg/Duration"](sec=0, nanosec=(k - first) * PERIOD),
                )
                for k in range(first, first + (trajectory_chunk or 0) + 3)
            ]
            trajectory = types["trajectory_msgs/msg/JointTrajectory"](
                header=header(int(ticks[first])), joint_names=["elbow", "shoulder"], points=points
            )
            messages.append((int(ticks[first]) + _late(rng, 0.5, 3.0), "/joint_trajectory", trajectory))
        if trajectory_chunk:
            start = int(ticks[-1]) + 500 * MS
            continue
        idle = ticks[-1] + PERIOD * np.arange(24 if idle_commands and index < episodes - 1 else 0, dtype=np.int64)
        for k, tick in enumerate([*ticks[:-1], *idle]):
            data = np.resize(commands[k] if k < steps else np.zeros(2), command_width).astype(np.float64)
            if leader_names is not None:
                value = {"shoulder": data[0], "elbow": data[1]}
                leader = types[JOINT_STATE](
                    header=header(int(tick)),
                    name=list(leader_names),
                    position=np.zeros(len(leader_names)),
                    velocity=np.array([], dtype=np.float64),
                    effort=np.array([value.get(n, 0.0) for n in leader_names]),
                )
                messages.append((int(tick) + _late(rng, 0.5, 3.0), "/leader/joint_states", leader))
                continue
            messages.append(
                (
                    int(tick) + _late(rng, 0.5, 3.0),
                    "/joint_commands",
                    types[MULTI_ARRAY](layout=types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=data),
                )
            )
        silent += [(int(ticks[tick]), int(ticks[tick]) + 300 * MS) for episode, tick in state_gaps if episode == index]
        start = int(ticks[-1]) + 500 * MS
    end = start
    stamps = np.arange(EPOCH + STATE_PHASE, end, STATE_PERIOD, dtype=np.int64)
    for low, high in silent:
        stamps = stamps[(stamps < low) | (stamps >= high)]
    positions, velocities = truth(stamps)
    for stamp, position, velocity in zip(stamps, positions, velocities, strict=True):
        logged = {"shoulder": 0, "elbow": 1}
        state = types[JOINT_STATE](
            header=header(int(stamp)),
            name=list(LOGGED_NAMES) if names else [],
            position=np.array([position[logged[n]] if n in logged else 0.0 for n in LOGGED_NAMES]),
            velocity=np.array([velocity[logged[n]] if n in logged else 0.0 for n in LOGGED_NAMES]),
            effort=np.array([], dtype=np.float64),
        )
        messages.append((int(stamp) + _late(rng, 0.5, 3.0), "/joint_states", state))
    goal = types[POINT](header=header(EPOCH), point=types["geometry_msgs/msg/Point"](x=GOAL[0], y=GOAL[1], z=0.0))
    messages.append((EPOCH + _late(rng, 0.5, 3.0), "/goal", goal))

    msgtypes = {"/joint_states": JOINT_STATE, "/goal": POINT, **({"/episode": STRING} if markers else {})}
    msgtypes.update({"/task_status": success_msgtype} if success_ticks is not None else {})
    if trajectory_chunk:
        msgtypes["/joint_trajectory"] = "trajectory_msgs/msg/JointTrajectory"
    elif leader_names:
        msgtypes["/leader/joint_states"] = JOINT_STATE
    else:
        msgtypes["/joint_commands"] = MULTI_ARRAY
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {topic: writer.add_connection(topic, t, typestore=TYPESTORE) for topic, t in msgtypes.items()}
        for log_ns, topic, message in sorted(messages, key=lambda m: m[0]):
            writer.write(connections[topic], log_ns, TYPESTORE.serialize_cdr(message, msgtypes[topic]))
    return LoggedBag(path, truths, stamps)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def run(bag: Path, *, strict: bool = False) -> QualityReport:
    _, report = ingest([bag], IngestConfig(), DATASET_ID, workers=1, strict=strict)
    return report


def load() -> list[Any]:
    return list(minari.load_dataset(DATASET_ID).iterate_episodes())


def assert_nothing_written(root: Path) -> None:
    leftovers = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
    assert leftovers == [], f"ingest left files behind: {leftovers}"


def assert_matches_truth(episode: Any, truth_episode: TruthEpisode, steps: int) -> None:
    """Observations within 2 mrad / 0.01 rad/s of the truth at every tick; every action exactly its tick's command."""
    ticks = truth_episode.ticks[: steps + 1]
    position, velocity = truth(ticks)
    observations = np.asarray(episode.observations)
    assert observations.shape == (steps + 1, 6)
    np.testing.assert_allclose(observations[:, 0:2], position, atol=2e-3, rtol=0)
    np.testing.assert_allclose(observations[:, 2:4], velocity, atol=1e-2, rtol=0)
    np.testing.assert_array_equal(observations[:, 4:6], np.tile(np.array(GOAL, dtype=np.float32), (steps + 1, 1)))
    np.testing.assert_array_equal(np.asarray(episode.actions), truth_episode.commands[:steps].astype(np.float32))


def test_late_markers_do_not_shift_actions(tmp_path: Path, root: Path) -> None:
    """Fix 2: markers logged 0.5–5 ms late, commands 0.5–3 ms late; every action lands on its own tick."""
    logged = write_teleop_like_bag(tmp_path / "bags" / "late_markers", episodes=8)
    report = run(logged.path)
    episodes = load()
    assert len(episodes) == 8
    for episode, truth_episode, entry in zip(episodes, logged.episodes, report.bags[0].episodes, strict=True):
        assert entry.kept and entry.reason == "end_marker" and entry.actions_held == 0
        assert_matches_truth(episode, truth_episode, steps=60)
        assert bool(episode.truncations[-1]) and not np.asarray(episode.terminations).any()


def test_command_array_longer_than_the_mapping_is_refused(tmp_path: Path, root: Path) -> None:
    """Fix 1: 3 command values for 2 mapped joints is an error naming bag, topic, field and time."""
    logged = write_teleop_like_bag(tmp_path / "bags" / "three_commands", episodes=2, command_width=3)
    first_command = int(logged.episodes[0].ticks[0])
    with pytest.raises(
        IngestError, match=r"three_commands, topic /joint_commands, field joint_effort, t=1780000000\."
    ) as error:
        run(logged.path)
    assert "3 values" in str(error.value) and "2 joints" in str(error.value)
    assert error.value.time_ns is not None and 0 < error.value.time_ns - first_command < 5 * MS
    assert_nothing_written(root)


def test_joint_state_arrays_of_another_length_than_the_names_are_refused(tmp_path: Path, root: Path) -> None:
    """Fix 1 for named arrays: positions that do not match the name list cannot be mapped by name."""
    bag = write_teleop_like_bag(tmp_path / "bags" / "src", episodes=2).path
    broken = tmp_path / "bags" / "short_positions"
    with (
        AnyReader([bag], default_typestore=TYPESTORE) as reader,
        Writer(broken, version=9, storage_plugin=StoragePlugin.MCAP) as writer,
    ):
        out = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=TYPESTORE) for c in reader.connections}
        count = 0
        for connection, log_ns, raw in reader.messages():
            if connection.topic == "/joint_states":
                count += 1
                if count == 50:
                    message: Any = reader.deserialize(raw, connection.msgtype)
                    message.position = message.position[:2]
                    raw = bytes(TYPESTORE.serialize_cdr(message, connection.msgtype))
                    bad_log_ns = log_ns
            writer.write(out[connection.topic], log_ns, raw)
    with pytest.raises(
        IngestError,
        match=re.escape(f"short_positions, topic /joint_states, field joint_position, t={bad_log_ns / 1e9:.9f} s"),
    ):
        run(broken)
    assert_nothing_written(root)


def test_episode_cut_at_a_gap_ends_at_real_data(tmp_path: Path, root: Path) -> None:
    """Fix 3: JointState silent for 0.3 s mid-episode; the episode ends with no tick extrapolated past the data."""
    logged = write_teleop_like_bag(tmp_path / "bags" / "state_gap", episodes=3, state_gaps=((1, 30),))
    report = run(logged.path)
    entries = report.bags[0].episodes
    assert [e.reason for e in entries] == ["end_marker", "gap", "end_marker"]
    episodes = load()
    gap_from = int(logged.episodes[1].ticks[30])
    last_sample = int(logged.state_stamps[logged.state_stamps < gap_from].max())
    kept = entries[1].steps
    # The last tick lies within half a control period of the last real sample, and no tick with real data is lost.
    last_tick = int(logged.episodes[1].ticks[kept])
    assert 0 <= last_tick - last_sample <= PERIOD // 2 < last_tick + PERIOD - last_sample
    for episode, truth_episode, steps in zip(episodes, logged.episodes, [60, kept, 60], strict=True):
        assert_matches_truth(episode, truth_episode, steps)


def rewrite(
    src: Path,
    dst: Path,
    change: Callable[[str, int, bytes], bytes] = lambda topic, log_ns, raw: raw,
    extra: Sequence[tuple[str, str, str, list[tuple[int, bytes]]]] = (),
) -> Path:
    """Copy a bag message by message through ``change``, adding ``extra`` (topic, type, definition, messages)."""
    with (
        AnyReader([src], default_typestore=TYPESTORE) as reader,
        Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer,
    ):
        out = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=TYPESTORE) for c in reader.connections}
        for topic, msgtype, definition, messages in extra:
            connection = writer.add_connection(topic, msgtype, msgdef=definition, rihs01="RIHS01_" + "0" * 64)
            for log_ns, raw in messages:
                writer.write(connection, log_ns, raw)
        for connection, log_ns, raw in reader.messages():
            writer.write(out[connection.topic], log_ns, change(connection.topic, log_ns, bytes(raw)))
    return dst


def test_bare_mcap_file_without_metadata_ingests(tmp_path: Path, root: Path) -> None:
    """A lone .mcap (no metadata.yaml), as other tools write them, is a bag of its own; a folder of them works too."""
    logged = write_teleop_like_bag(tmp_path / "bags" / "teleop", episodes=2)
    lone = tmp_path / "loose" / "teleop_01.mcap"
    lone.parent.mkdir()
    lone.write_bytes(next(logged.path.glob("*.mcap")).read_bytes())
    for argument in (lone, lone.parent):
        _, report = ingest([argument], IngestConfig(), DATASET_ID, workers=1, overwrite=True)
        assert [b.bag for b in report.bags] == ["teleop_01.mcap"] and list(report.bags[0].sha256) == ["teleop_01.mcap"]
        for episode, truth_episode in zip(load(), logged.episodes, strict=True):
            assert_matches_truth(episode, truth_episode, steps=60)


def test_trailing_cdr_bytes_are_a_counted_repair_and_refused_when_strict(tmp_path: Path, root: Path) -> None:
    logged = write_teleop_like_bag(tmp_path / "bags" / "src", episodes=2)
    padded: list[int] = []

    def pad(topic: str, log_ns: int, raw: bytes) -> bytes:
        if topic != "/joint_states" or len(padded) >= 7:
            return raw
        padded.append(log_ns)
        return raw + b"\x00" * 8

    bag = rewrite(logged.path, tmp_path / "bags" / "trailing", pad)
    with pytest.raises(
        IngestError, match=re.escape(f"trailing, topic /joint_states, t={padded[0] / 1e9:.9f} s: 8 bytes")
    ):
        run(bag, strict=True)
    assert_nothing_written(root)
    report = run(bag)
    assert report.bags[0].trailing_bytes == {"/joint_states": 7}
    for episode, truth_episode in zip(load(), logged.episodes, strict=True):
        assert_matches_truth(episode, truth_episode, steps=60)


VENDOR_DEFINITION = "acme_msgs/Calibration calibration\nfloat64 torque\n"  # names a type the bag does not define


def test_vendor_topic_without_a_usable_definition_is_ignored_unless_mapped(tmp_path: Path, root: Path) -> None:
    logged = write_teleop_like_bag(tmp_path / "bags" / "src", episodes=2)
    vendor = [(EPOCH + i * 10 * MS, b"\x00\x01\x00\x00" + bytes(range(24))) for i in range(100)]
    bag = rewrite(
        logged.path,
        tmp_path / "bags" / "vendor",
        extra=[("/acme/status", "acme_msgs/msg/Status", VENDOR_DEFINITION, vendor)],
    )
    run(bag)
    for episode, truth_episode in zip(load(), logged.episodes, strict=True):
        assert_matches_truth(episode, truth_episode, steps=60)
    mapped = IngestConfig.model_validate(
        {
            "action": {
                "joint_effort": {
                    **IngestConfig().action_mapping.model_dump(),
                    "topic": "/acme/status",
                    "msgtype": "acme_msgs/msg/Status",
                }
            }
        }
    )
    with pytest.raises(
        IngestError, match=r"vendor, topic /acme/status, field joint_effort: cannot decode acme_msgs/msg/Status"
    ):
        ingest([bag], mapped, "symgate/other-vendor-v0", workers=1)


def remapped(**fields: dict[str, Any]) -> IngestConfig:
    """The default ingest config with some fields' mappings updated."""
    default = IngestConfig()
    groups: dict[str, dict[str, Any]] = {"observations": {}, "action": {}}
    for group, mappings in (("observations", default.observations), ("action", default.action)):
        for name, mapping in mappings.items():
            groups[group][name] = {**mapping.model_dump(), **fields.get(name, {})}
    return IngestConfig.model_validate(groups)


def assert_ingested_as_truth(logged: LoggedBag, config: IngestConfig) -> QualityReport:
    _, report = ingest([logged.path], config, DATASET_ID, workers=1)
    assert [e.reason for e in report.bags[0].episodes] == ["end_marker"] * len(logged.episodes)
    for episode, truth_episode in zip(load(), logged.episodes, strict=True):
        assert_matches_truth(episode, truth_episode, steps=60)
    return report


def test_empty_joint_names_with_an_explicit_joint_order(tmp_path: Path, root: Path) -> None:
    logged = write_teleop_like_bag(tmp_path / "bags" / "unnamed", episodes=2, names=False)
    order = {"joint_order": LOGGED_NAMES}
    assert_ingested_as_truth(logged, remapped(joint_position=order, joint_velocity=order))


def test_empty_joint_names_without_a_joint_order_are_refused(tmp_path: Path, root: Path) -> None:
    logged = write_teleop_like_bag(tmp_path / "bags" / "unnamed", episodes=2, names=False)
    with pytest.raises(
        IngestError, match=r"unnamed, topic /joint_states, field joint_position, t=.*give the mapping a joint_order"
    ):
        run(logged.path)
    assert_nothing_written(root)


def test_leader_arm_joint_state_commands_naming_another_joint_set(tmp_path: Path, root: Path) -> None:
    """State names [elbow, wrist_unused, shoulder]; the leader arm's JointState names [gripper, shoulder, elbow]."""
    logged = write_teleop_like_bag(
        tmp_path / "bags" / "leader", episodes=3, leader_names=("gripper", "shoulder", "elbow")
    )
    leader = {
        "topic": "/leader/joint_states",
        "msgtype": JOINT_STATE,
        "path": "effort",
        "names_path": "name",
        "time_base": "header",
    }
    report = assert_ingested_as_truth(logged, remapped(joint_effort=leader))
    assert report.bags[0].repairs["joint_effort"]["joint_order_differs"] == 60 * 3


def test_header_stamps_in_simulation_time_with_wall_clock_log_time(tmp_path: Path, root: Path) -> None:
    """No /clock: header stamps start near 12 s (sim time), log time is epoch; header_shifted aligns them."""
    logged = write_teleop_like_bag(tmp_path / "bags" / "sim_time", episodes=2, header_clock_ns=EPOCH - 12 * NS)
    with pytest.raises(
        IngestError, match=r"sim_time, topic /joint_states, field joint_position: header.stamp is .* header_shifted"
    ):
        run(logged.path)
    shifted = {"time_base": "header_shifted"}
    assert_ingested_as_truth(logged, remapped(joint_position=shifted, joint_velocity=shifted, goal_position=shifted))


@pytest.mark.parametrize(
    ("rule", "idle_commands"), [("gaps", False), ("idle", True)], ids=["by-command-gaps", "by-idle-operator"]
)
def test_episodes_without_markers_by_gaps_or_idle_rule(
    tmp_path: Path, root: Path, rule: str, idle_commands: bool
) -> None:
    logged = write_teleop_like_bag(tmp_path / "bags" / rule, episodes=3, markers=False, idle_commands=idle_commands)
    config = IngestConfig.model_validate({"episodes": {"segment_by": rule, "idle_s": 0.3, "marker_topic": None}})
    _, report = ingest([logged.path], config, DATASET_ID, workers=1)
    assert [(e.reason, e.steps) for e in report.bags[0].episodes] == [("open_ended", 60)] * 3
    for episode, truth_episode in zip(load(), logged.episodes, strict=True):
        assert_matches_truth(episode, truth_episode, steps=60)


def test_one_episode_per_file(tmp_path: Path, root: Path) -> None:
    """Teleoperation logs: one bag (or bare .mcap) per demonstration, no markers."""
    logged = [
        write_teleop_like_bag(tmp_path / "bags" / f"demo_{i}", seed=i, episodes=1, markers=False) for i in range(3)
    ]
    config = IngestConfig.model_validate({"episodes": {"segment_by": "file", "marker_topic": None}})
    _, report = ingest([tmp_path / "bags"], config, DATASET_ID, workers=1)
    assert [b.bag for b in report.bags] == ["demo_0", "demo_1", "demo_2"]
    assert [[(e.reason, e.steps) for e in b.episodes] for b in report.bags] == [[("open_ended", 60)]] * 3
    for episode, bag in zip(load(), logged, strict=True):
        assert_matches_truth(episode, bag.episodes[0], steps=60)


def test_reward_rule_none_marks_the_dataset_as_having_no_task_signal(tmp_path: Path, root: Path) -> None:
    logged = write_teleop_like_bag(tmp_path / "bags" / "demos", episodes=2)
    config = IngestConfig.model_validate({"reward": {"kind": "none"}})
    _, report = ingest([logged.path], config, DATASET_ID, workers=1)
    dataset = minari.load_dataset(DATASET_ID)
    assert dataset.storage.metadata["symgate"]["reward_rule"] == "none"
    for episode, truth_episode in zip(load(), logged.episodes, strict=True):
        assert_matches_truth(episode, truth_episode, steps=60)
        assert not np.asarray(episode.rewards).any() and not np.asarray(episode.terminations).any()
    assert [e.success for e in report.bags[0].episodes] == [False, False]


@pytest.mark.parametrize("msgtype", [BOOL, STRING], ids=["bool", "string"])
def test_success_from_a_topic_terminates_at_the_first_tick_after_it(tmp_path: Path, root: Path, msgtype: str) -> None:
    """Success reported at tick 40 of episode 0 (logged 0.5–3 ms late): step 39's s′ is the first tick after it."""
    logged = write_teleop_like_bag(
        tmp_path / "bags" / "status", episodes=2, success_ticks={0: 40}, success_msgtype=msgtype
    )
    rule = {"kind": "success_topic", "topic": "/task_status", "msgtype": msgtype}
    _, report = ingest([logged.path], IngestConfig.model_validate({"reward": rule}), DATASET_ID, workers=1)
    first, second = report.bags[0].episodes
    assert (first.reason, first.steps, first.success) == ("success", 41, True)
    assert (second.reason, second.steps, second.success) == ("end_marker", 60, False)
    episodes = load()
    assert_matches_truth(episodes[0], logged.episodes[0], steps=41)
    assert np.asarray(episodes[0].rewards).tolist() == [0.0] * 40 + [1.0]
    assert np.asarray(episodes[0].terminations)[-1] and not np.asarray(episodes[0].truncations)[-1]
    assert_matches_truth(episodes[1], logged.episodes[1], steps=60)


def test_success_from_the_end_marker(tmp_path: Path, root: Path) -> None:
    logged = write_teleop_like_bag(
        tmp_path / "bags" / "marked", episodes=3, end_reasons=["success", "timeout", "success"]
    )
    config = IngestConfig.model_validate({"reward": {"kind": "end_marker", "success_reasons": ["success"]}})
    _, report = ingest([logged.path], config, DATASET_ID, workers=1)
    assert [(e.reason, e.steps, e.success) for e in report.bags[0].episodes] == [
        ("success", 60, True),
        ("end_marker", 60, False),
        ("success", 60, True),
    ]
    for episode, truth_episode, won in zip(load(), logged.episodes, [True, False, True], strict=True):
        assert_matches_truth(episode, truth_episode, steps=60)
        assert np.asarray(episode.rewards).tolist() == [0.0] * 59 + [float(won)]
        assert bool(np.asarray(episode.terminations)[-1]) == won


@pytest.mark.parametrize("algorithm", ["iql", "cql"])
def test_train_refuses_value_based_methods_on_a_no_reward_dataset(tmp_path: Path, root: Path, algorithm: str) -> None:
    from pipeline.io import ConfigError
    from pipeline.train import TrainConfig, train

    logged = write_teleop_like_bag(tmp_path / "bags" / "demos", episodes=2)
    ingest([logged.path], IngestConfig.model_validate({"reward": {"kind": "none"}}), DATASET_ID, workers=1)
    config = TrainConfig.model_validate({"algorithm": algorithm, "steps": 1, "device": "cpu"})
    with pytest.raises(
        ConfigError, match=rf"{DATASET_ID} was ingested with reward rule none.*{algorithm} learns values"
    ):
        train(config, DATASET_ID, tmp_path / "run")


def test_joint_trajectory_commands_use_the_point_active_at_each_tick(tmp_path: Path, root: Path) -> None:
    """A trajectory every 5 ticks, each with 3 points past the next one's start that the next trajectory replaces."""
    logged = write_teleop_like_bag(tmp_path / "bags" / "trajectory", episodes=2, trajectory_chunk=5)
    trajectory = {
        "topic": "/joint_trajectory",
        "msgtype": "trajectory_msgs/msg/JointTrajectory",
        "path": "effort",
        "names_path": "joint_names",
        "time_base": "header",
        "resample": "zero_order_hold",
    }
    report = assert_ingested_as_truth(logged, remapped(joint_effort=trajectory))
    assert [e.actions_held for e in report.bags[0].episodes] == [0, 0]
    assert [e.actions_clipped for e in report.bags[0].episodes] == [0, 0]
