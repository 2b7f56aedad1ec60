"""Ingestion of deliberately broken bags: every case is a real rosbag2 on disk, no mocks.

One good bag is recorded once (1 robot, 2 expert episodes); each test derives a broken copy of it
(rewritten message by message with ``rosbags``, or corrupted byte by byte) and checks that
ingestion either repairs it and counts the repair in the quality report, or refuses it with an
``IngestError`` naming the bag folder and topic, leaving nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import minari
import numpy as np
import pytest
from numpy.typing import NDArray
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from pipeline.fleet import FleetConfig, record_fleet
from pipeline.ingest import IngestConfig, IngestError, QualityReport, ingest

NS = 1_000_000_000
DATASET_ID = "symgate/test-v0"
JOINT_STATES, GOAL, COMMANDS, EPISODE = "/joint_states", "/goal", "/joint_commands", "/episode"
CONFIG_JOINTS = ("shoulder", "elbow")  # the default ingest config's dataset order
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)

# A message type no ROS distribution knows (its definition travels in the bag).
UNKNOWN_TYPE = "acme_msgs/msg/JointReading"
CUSTOM_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
CUSTOM_TYPESTORE.register(
    get_types_from_msg("std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\n", UNKNOWN_TYPE)
)


@dataclasses.dataclass
class Record:
    """One bag message, decoded: topic, type, log time and the message object."""

    topic: str
    msgtype: str
    log_ns: int
    message: Any


Transform = Callable[[list[Record]], list[Record]]


# ---------------------------------------------------------------- bag helpers


def read_records(bag: Path) -> tuple[list[Record], list[tuple[str, str]]]:
    """Every message of a bag, decoded, in log-time order, and the bag's connections (topic, type)."""
    with AnyReader([bag], default_typestore=TYPESTORE) as reader:
        connections = [(c.topic, c.msgtype) for c in reader.connections]
        records = [
            Record(c.topic, c.msgtype, log_ns, reader.deserialize(raw, c.msgtype))
            for c, log_ns, raw in reader.messages()
        ]
    return records, connections


def write_bag(
    dst: Path,
    records: Sequence[Record],
    connections: Sequence[tuple[str, str]],
    *,
    storage: StoragePlugin = StoragePlugin.MCAP,
    typestore: Typestore = TYPESTORE,
) -> Path:
    """Write records (sorted by log time) into a new rosbag2 folder with exactly these connections."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Writer(dst, version=9, storage_plugin=storage) as writer:
        by_topic = {topic: writer.add_connection(topic, msgtype, typestore=typestore) for topic, msgtype in connections}
        for record in sorted(records, key=lambda r: r.log_ns):
            connection = by_topic[record.topic]
            assert connection.msgtype == record.msgtype, record.topic
            writer.write(connection, record.log_ns, typestore.serialize_cdr(record.message, record.msgtype))
    return dst


def rewrite_bag(
    src: Path,
    dst: Path,
    transform: Transform | None = None,
    *,
    storage: StoragePlugin = StoragePlugin.MCAP,
    typestore: Typestore = TYPESTORE,
) -> Path:
    """Copy a bag message by message through ``transform``; a topic left without messages loses its connection."""
    records, _ = read_records(src)
    records = transform(records) if transform else records
    connections = list(dict.fromkeys((r.topic, r.msgtype) for r in records))
    return write_bag(dst, records, connections, storage=storage, typestore=typestore)


def stamp_ns(message: Any) -> int:
    return int(message.header.stamp.sec) * NS + int(message.header.stamp.nanosec)


def with_stamp(message: Any, ns: int) -> Any:
    stamp = dataclasses.replace(message.header.stamp, sec=ns // NS, nanosec=ns % NS)
    return dataclasses.replace(message, header=dataclasses.replace(message.header, stamp=stamp))


def indices(records: Sequence[Record], topic: str) -> list[int]:
    """Positions (in ``records``) of the messages of one topic."""
    return [i for i, r in enumerate(records) if r.topic == topic]


def markers(records: Sequence[Record]) -> list[tuple[int, dict[str, Any]]]:
    """Episode markers: (log time, payload)."""
    return [(r.log_ns, json.loads(r.message.data)) for r in records if r.topic == EPISODE]


def marker(log_ns: int, payload: dict[str, Any]) -> Record:
    message = TYPESTORE.types["std_msgs/msg/String"](data=json.dumps(payload))
    return Record(EPISODE, "std_msgs/msg/String", log_ns, message)


def set_joint_value(message: Any, array: str, joint: str, value: float) -> Any:
    """A copy of a JointState with one joint's entry of ``array`` replaced."""
    values = np.array(getattr(message, array), dtype=np.float64)
    values[list(message.name).index(joint)] = value
    return dataclasses.replace(message, **{array: values})


def reorder_joints(message: Any, order: Sequence[str]) -> Any:
    """A copy of a JointState listing its joints in ``order`` (every array permuted consistently)."""
    index = [list(message.name).index(joint) for joint in order]
    return dataclasses.replace(
        message,
        name=list(order),
        position=np.asarray(message.position)[index],
        velocity=np.asarray(message.velocity)[index],
        effort=np.asarray(message.effort)[index],
    )


# ---------------------------------------------------------------- transforms (each returns new records)


def every_nth(records: list[Record], topic: str, n: int) -> list[int]:
    """Every n-th message of ``topic``, skipping the very first (so each field keeps a sample); n=1: all of them."""
    found = indices(records, topic)
    return found if n == 1 else found[1::n]


def nonfinite(topic: str, array: str, value: float, n: int) -> Transform:
    """Put ``value`` into one joint (or command component) of every n-th message of ``topic``."""

    def transform(records: list[Record]) -> list[Record]:
        out = list(records)
        for i in every_nth(out, topic, n):
            message = out[i].message
            if topic == JOINT_STATES:
                message = set_joint_value(message, array, "shoulder", value)
            else:
                data = np.array(message.data, dtype=np.float64)
                data[1] = value
                message = dataclasses.replace(message, data=data)
            out[i] = dataclasses.replace(out[i], message=message)
        return out

    return transform


def swap_adjacent(n: int) -> Transform:
    """Every n-th joint state arrives before its predecessor: the log keeps its order, the stamps go back."""

    def transform(records: list[Record]) -> list[Record]:
        out = list(records)
        states = indices(out, JOINT_STATES)
        for k in range(1, len(states) - 1, n):
            a, b = states[k], states[k + 1]
            out[a], out[b] = (
                dataclasses.replace(out[a], message=out[b].message),
                dataclasses.replace(out[b], message=out[a].message),
            )
        return out

    return transform


def duplicate_states(n: int, delay_ns: int = 1_000) -> Transform:
    """Every n-th joint state is logged a second time (same stamp, same values), ``delay_ns`` after the original."""

    def transform(records: list[Record]) -> list[Record]:
        copies = [
            dataclasses.replace(records[i], log_ns=records[i].log_ns + delay_ns)
            for i in every_nth(records, JOINT_STATES, n)
        ]
        return records + copies

    return transform


def clock_jump(shift_s: float, begin_s: float = 0.2, end_s: float = 0.4) -> Transform:
    """Joint-state stamps logged in [begin, end) s after the first start marker are shifted by ``shift_s``."""

    def transform(records: list[Record]) -> list[Record]:
        start = markers(records)[0][0]
        begin, end = start + round(begin_s * NS), start + round(end_s * NS)
        return [
            dataclasses.replace(r, message=with_stamp(r.message, stamp_ns(r.message) + round(shift_s * NS)))
            if r.topic == JOINT_STATES and begin <= r.log_ns < end
            else r
            for r in records
        ]

    return transform


def drop_joint(joint: str, n: int) -> Transform:
    """Every n-th joint state (every one for n=1) lacks ``joint`` entirely (name and values)."""

    def transform(records: list[Record]) -> list[Record]:
        out = list(records)
        chosen = every_nth(out, JOINT_STATES, n)
        for i in chosen:
            message = out[i].message
            rest = [name for name in message.name if name != joint]
            out[i] = dataclasses.replace(out[i], message=reorder_joints(message, rest))
        return out

    return transform


def empty_velocity(n: int) -> Transform:
    """Every n-th joint state (every one for n=1) has an empty velocity array, as some drivers publish."""

    def transform(records: list[Record]) -> list[Record]:
        out = list(records)
        chosen = every_nth(out, JOINT_STATES, n)
        for i in chosen:
            out[i] = dataclasses.replace(out[i], message=dataclasses.replace(out[i].message, velocity=np.zeros(0)))
        return out

    return transform


def rename_joint(old: str, new: str) -> Transform:
    def transform(records: list[Record]) -> list[Record]:
        return [
            dataclasses.replace(
                r, message=dataclasses.replace(r.message, name=[new if x == old else x for x in r.message.name])
            )
            if r.topic == JOINT_STATES
            else r
            for r in records
        ]

    return transform


def order_joints(order_for: Callable[[int], Sequence[str]]) -> Transform:
    """Joint state k lists its joints in ``order_for(k)``."""

    def transform(records: list[Record]) -> list[Record]:
        out = list(records)
        for k, i in enumerate(indices(out, JOINT_STATES)):
            out[i] = dataclasses.replace(out[i], message=reorder_joints(out[i].message, order_for(k)))
        return out

    return transform


def without_topic(topic: str) -> Transform:
    return lambda records: [r for r in records if r.topic != topic]


def short_episode(duration_ns: int) -> Transform:
    """An extra episode between the two real ones whose end marker follows its start by ``duration_ns``."""

    def transform(records: list[Record]) -> list[Record]:
        first_end = markers(records)[1][0]
        start = first_end + 100_000_000  # 0.1 s after episode 0 ended, while the arm is homing
        extra = [
            marker(start, {"event": "start", "controller": "twitch"}),
            marker(start + duration_ns, {"event": "end"}),
        ]
        return records + extra

    return transform


def garbled_marker(records: list[Record]) -> list[Record]:
    """One extra marker, after episode 0 ended, that is not JSON."""
    garbled = TYPESTORE.types["std_msgs/msg/String"](data="{not json")
    return [*records, Record(EPISODE, "std_msgs/msg/String", markers(records)[1][0] + 1000, garbled)]


def retype(topic: str, msgtype: str, convert: Callable[[Any], Any]) -> Transform:
    """Log ``topic`` with another message type."""
    return lambda records: [
        Record(r.topic, msgtype, r.log_ns, convert(r.message)) if r.topic == topic else r for r in records
    ]


def to_point(message: Any) -> Any:
    return message.point


def to_float32_array(message: Any) -> Any:
    return TYPESTORE.types["std_msgs/msg/Float32MultiArray"](
        layout=message.layout, data=np.asarray(message.data, dtype=np.float32)
    )


def to_unknown_type(message: Any) -> Any:
    return CUSTOM_TYPESTORE.types[UNKNOWN_TYPE](
        header=message.header, name=list(message.name), position=message.position, velocity=message.velocity
    )


def to_int32(message: Any) -> Any:
    return TYPESTORE.types["std_msgs/msg/Int32"](data=len(message.data))


# ---------------------------------------------------------------- ingest helpers and fixtures


@pytest.fixture(scope="module")
def source_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The good bag every broken one is derived from: robot_000, two expert episodes, MCAP."""
    out = tmp_path_factory.mktemp("source") / "fleet"
    record_fleet(FleetConfig.model_validate({"robots": 1, "episodes": 2, "recipe": "expert"}), out, workers=1)
    return out / "robot_000"


@pytest.fixture(scope="module")
def baseline(source_bag: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[QualityReport, list[NDArray[Any]]]:
    """The good bag's report and per-episode observations."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("baseline") / "datasets"))
        _, report = ingest([source_bag], IngestConfig(), DATASET_ID, workers=1)
        return report, observations()


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MINARI_DATASETS_PATH for this test (not created)."""
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def run(bag: Path, *, strict: bool = False, overwrite: bool = False) -> QualityReport:
    _, report = ingest([bag], IngestConfig(), DATASET_ID, workers=1, strict=strict, overwrite=overwrite)
    return report


def observations(dataset_id: str = DATASET_ID) -> list[NDArray[Any]]:
    """Per-episode observations of a dataset, loaded with plain Minari."""
    dataset = minari.load_dataset(dataset_id)
    return [np.asarray(episode.observations) for episode in dataset.iterate_episodes()]


def repairs(report: QualityReport, field: str) -> dict[str, int]:
    """A field's repair counts, without joint_order_differs (a name mapping, not a repair)."""
    return {k: v for k, v in report.bags[0].repairs[field].items() if k != "joint_order_differs"}


def counted(**counts: int) -> dict[str, int]:
    zero = {"nonfinite": 0, "clock_jumps": 0, "duplicate_stamps": 0, "out_of_order": 0, "missing_joints": 0}
    return {**zero, **counts}


def assert_nothing_written(root: Path) -> None:
    """No dataset folder and no staging folder: the datasets root is absent or empty."""
    assert not (root / DATASET_ID).exists()
    leftovers = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
    assert leftovers == [], f"ingest left files behind: {leftovers}"


def assert_refused(root: Path, bag: Path, *patterns: str, strict: bool = False) -> None:
    """Ingest fails with an IngestError naming the bag folder, then matching every pattern in order; nothing written."""
    with pytest.raises(IngestError, match=".*".join([re.escape(f"{bag.name}"), *patterns])):
        run(bag, strict=strict)
    assert_nothing_written(root)


def assert_same_observations(expected: list[NDArray[Any]]) -> None:
    """The dataset just written holds exactly these per-episode observations."""
    got = observations()
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def copy_bag(source: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dst)
    return dst


def state_count(source: Path) -> int:
    return len(indices(read_records(source)[0], JOINT_STATES))


# ---------------------------------------------------------------- the good bag (control)


def test_source_bag_is_clean_and_its_joints_are_mapped_by_name(
    source_bag: Path, baseline: tuple[QualityReport, list[NDArray[Any]]], root: Path
) -> None:
    report, obs = baseline
    bag = report.bags[0]
    assert bag.skipped is None and bag.bad_markers == 0
    assert [(e.kept, e.reason) for e in bag.episodes] == [(True, "reached")] * 2
    for field in bag.repairs:
        assert repairs(report, field) == counted(), field
    # robot_000's driver lists its joints elbow first: every joint state is mapped by name
    assert bag.repairs["joint_position"]["joint_order_differs"] == state_count(source_bag)
    assert [o.shape for o in obs] == [(e.steps + 1, 6) for e in bag.episodes]
    # strict refuses repairs, not joints listed in another order (they are mapped by name, nothing is changed)
    strict = run(source_bag, strict=True)
    np.testing.assert_array_equal(np.concatenate(observations()), np.concatenate(obs))
    assert strict.bags[0].episodes == bag.episodes


# ---------------------------------------------------------------- unreadable storage


def _cut_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _cut_footer(data: bytes) -> bytes:
    return data[:-8]


def _emptied(data: bytes) -> bytes:
    return b""


def _bad_magic(data: bytes) -> bytes:
    return b"\x00" * 8 + data[8:]


def _garbage_middle(data: bytes) -> bytes:
    middle = len(data) // 3
    return data[:middle] + bytes(range(256)) * 8 + data[middle + 2048 :]


@pytest.mark.parametrize(
    "corrupt",
    [_cut_half, _cut_footer, _emptied, _bad_magic, _garbage_middle],
    ids=["truncated-half", "truncated-footer", "zero-bytes", "bad-magic", "garbage-in-middle"],
)
def test_corrupt_mcap_is_an_error(
    source_bag: Path, root: Path, tmp_path: Path, corrupt: Callable[[bytes], bytes]
) -> None:
    bag = copy_bag(source_bag, tmp_path / "bags" / "corrupt_mcap")
    (mcap,) = bag.glob("*.mcap")
    mcap.write_bytes(corrupt(mcap.read_bytes()))
    assert_refused(root, bag, "cannot read bag")


@pytest.mark.parametrize("table", ["messages", "topics"])
def test_sqlite3_bag_with_a_missing_table_is_an_error(source_bag: Path, root: Path, tmp_path: Path, table: str) -> None:
    bag = rewrite_bag(source_bag, tmp_path / "bags" / f"no_{table}_table", storage=StoragePlugin.SQLITE3)
    (db3,) = bag.glob("*.db3")
    with sqlite3.connect(db3) as db:
        db.execute(f"DROP TABLE {table}")
    db.close()
    assert_refused(root, bag, "cannot read bag")


def test_sqlite3_bag_that_is_not_a_database_is_an_error(source_bag: Path, root: Path, tmp_path: Path) -> None:
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "garbled_db3", storage=StoragePlugin.SQLITE3)
    (db3,) = bag.glob("*.db3")
    db3.write_bytes(b"definitely not SQLite" + db3.read_bytes()[64:])
    assert_refused(root, bag, "cannot read bag")


def test_sqlite3_copy_of_the_good_bag_ingests_like_the_mcap(
    source_bag: Path, baseline: tuple[QualityReport, list[NDArray[Any]]], root: Path, tmp_path: Path
) -> None:
    """Control for the sqlite3 cases: the rewrite itself is faithful."""
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "sqlite_copy", storage=StoragePlugin.SQLITE3)
    report = run(bag)
    assert report.bags[0].episodes == baseline[0].bags[0].episodes
    assert_same_observations(baseline[1])


# ---------------------------------------------------------------- topics and message types


@pytest.mark.parametrize("topic", [JOINT_STATES, GOAL, COMMANDS])
@pytest.mark.parametrize("keep_connection", [False, True], ids=["no-connection", "connection-without-messages"])
def test_required_topic_absent_is_an_error(
    source_bag: Path, root: Path, tmp_path: Path, topic: str, keep_connection: bool
) -> None:
    records, connections = read_records(source_bag)
    kept = without_topic(topic)(records)
    if not keep_connection:
        connections = [c for c in connections if c[0] != topic]
    bag = write_bag(tmp_path / "bags" / "missing_topic", kept, connections)
    assert_refused(root, bag, f"topic {re.escape(topic)}", "required topic is absent or empty")


@pytest.mark.parametrize(
    ("topic", "msgtype", "convert"),
    [
        (GOAL, "geometry_msgs/msg/Point", to_point),
        (COMMANDS, "std_msgs/msg/Float32MultiArray", to_float32_array),
        (JOINT_STATES, UNKNOWN_TYPE, to_unknown_type),
        (EPISODE, "std_msgs/msg/Int32", to_int32),
    ],
    ids=["goal-unstamped", "commands-float32", "joint-states-unknown-type", "markers-int32"],
)
def test_unexpected_message_type_is_an_error(
    source_bag: Path, root: Path, tmp_path: Path, topic: str, msgtype: str, convert: Callable[[Any], Any]
) -> None:
    bag = rewrite_bag(
        source_bag, tmp_path / "bags" / "wrong_type", retype(topic, msgtype, convert), typestore=CUSTOM_TYPESTORE
    )
    assert_refused(root, bag, f"topic {re.escape(topic)}", f"message type {re.escape(msgtype)}")


def test_marker_topic_is_optional(source_bag: Path, root: Path, tmp_path: Path) -> None:
    """Without /episode markers, goal changes delimit the episodes (the documented fall-back)."""
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "no_markers", without_topic(EPISODE))
    report = run(bag)
    assert [e.kept for e in report.bags[0].episodes] == [True, True]
    assert len(observations()) == 2


# ---------------------------------------------------------------- repaired samples


@pytest.mark.parametrize(
    ("topic", "array", "value", "field"),
    [
        (JOINT_STATES, "position", float("nan"), "joint_position"),
        (JOINT_STATES, "velocity", float("inf"), "joint_velocity"),
        (COMMANDS, "data", float("-inf"), "joint_effort"),
    ],
    ids=["position-nan", "velocity-inf", "command-minus-inf"],
)
def test_nonfinite_samples_are_dropped_and_counted(
    source_bag: Path, root: Path, tmp_path: Path, topic: str, array: str, value: float, field: str
) -> None:
    records, _ = read_records(source_bag)
    expected = len(every_nth(records, topic, 25))
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "nonfinite", nonfinite(topic, array, value, 25))
    report = run(bag)
    for name in report.bags[0].repairs:
        assert repairs(report, name) == (counted(nonfinite=expected) if name == field else counted()), name
    assert [e.kept for e in report.bags[0].episodes] == [True, True]
    dataset = minari.load_dataset(DATASET_ID)
    for episode in dataset.iterate_episodes():
        assert np.isfinite(episode.observations).all() and np.isfinite(episode.actions).all()


def test_nonfinite_values_in_an_unmapped_array_are_ignored(
    source_bag: Path, baseline: tuple[QualityReport, list[NDArray[Any]]], root: Path, tmp_path: Path
) -> None:
    """NaN effort in every joint state: effort is not ingested, so nothing is dropped."""
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "nan_effort", nonfinite(JOINT_STATES, "effort", np.nan, 1))
    report = run(bag)
    for name in report.bags[0].repairs:
        assert repairs(report, name) == counted(), name
    assert_same_observations(baseline[1])


def test_out_of_order_stamps_are_resorted(
    source_bag: Path, baseline: tuple[QualityReport, list[NDArray[Any]]], root: Path, tmp_path: Path
) -> None:
    """Joint states that reach the log in the wrong order are put back in stamp order: same data as the original."""
    expected = len(range(1, state_count(source_bag) - 1, 20))
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "out_of_order", swap_adjacent(20))
    report = run(bag)
    assert repairs(report, "joint_position") == repairs(report, "joint_velocity") == counted(out_of_order=expected)
    assert report.bags[0].episodes == baseline[0].bags[0].episodes
    assert_same_observations(baseline[1])


@pytest.mark.parametrize("delay_ns", [1_000, 12_000_000], ids=["right-after", "after-two-newer-states"])
def test_duplicate_stamps_are_dropped_and_counted(
    source_bag: Path, baseline: tuple[QualityReport, list[NDArray[Any]]], root: Path, tmp_path: Path, delay_ns: int
) -> None:
    """Every 20th joint state logged again; a late copy also makes the stamps go backwards once."""
    records, _ = read_records(source_bag)
    expected = len(every_nth(records, JOINT_STATES, 20))
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "duplicates", duplicate_states(20, delay_ns))
    report = run(bag)
    backwards = expected if delay_ns > 10_000_000 else 0
    assert repairs(report, "joint_position") == counted(duplicate_stamps=expected, out_of_order=backwards)
    assert repairs(report, "joint_velocity") == counted(duplicate_stamps=expected, out_of_order=backwards)
    assert report.bags[0].episodes == baseline[0].bags[0].episodes
    assert_same_observations(baseline[1])


@pytest.mark.parametrize("shift_h", [-3.0, 3.0], ids=["back-by-hours", "forward-by-hours"])
def test_clock_jump_is_dropped_and_truncates_the_episode(
    source_bag: Path, baseline: tuple[QualityReport, list[NDArray[Any]]], root: Path, tmp_path: Path, shift_h: float
) -> None:
    """Joint-state stamps jump by hours for 0.2 s of episode 0: those samples are dropped, the episode ends there."""
    records, _ = read_records(source_bag)
    start = markers(records)[0][0]
    expected = sum(1 for r in records if r.topic == JOINT_STATES and start + 0.2 * NS <= r.log_ns < start + 0.4 * NS)
    assert expected > 30
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "clock_jump", clock_jump(shift_h * 3600, 0.2, 0.4))
    report = run(bag)
    assert repairs(report, "joint_position") == repairs(report, "joint_velocity") == counted(clock_jumps=expected)
    first, second = report.bags[0].episodes
    assert first.kept and first.reason == "gap"
    assert round(0.2 * 50) <= first.steps <= round(0.3 * 50)  # samples stop at 0.2 s, stale after 0.1 s more
    assert second == baseline[0].bags[0].episodes[1]
    ours = observations()
    np.testing.assert_array_equal(ours[0][:10], baseline[1][0][:10])
    np.testing.assert_array_equal(ours[1], baseline[1][1])


def test_unsynchronised_clocks_are_an_error(source_bag: Path, root: Path, tmp_path: Path) -> None:
    """Every joint-state stamp is 2 h off the logger's clock: states cannot be aligned with commands at all."""

    def transform(records: list[Record]) -> list[Record]:
        return [
            dataclasses.replace(r, message=with_stamp(r.message, stamp_ns(r.message) - 2 * 3600 * NS))
            if r.topic == JOINT_STATES
            else r
            for r in records
        ]

    bag = rewrite_bag(source_bag, tmp_path / "bags" / "clock_offset", transform)
    assert_refused(
        root, bag, re.escape(JOINT_STATES), "joint_position", r"-7200\.\d+ s from log time", "not synchronised"
    )


def test_estop_truncates_the_episode(
    source_bag: Path, baseline: tuple[QualityReport, list[NDArray[Any]]], root: Path, tmp_path: Path
) -> None:
    """An e-stop 0.3 s into episode 0 (and its release) truncates that episode at the tick before it."""
    bool_type = "std_msgs/msg/Bool"
    message_class = TYPESTORE.types[bool_type]

    def transform(records: list[Record]) -> list[Record]:
        start = markers(records)[0][0]
        return [
            *records,
            Record("/estop", bool_type, start + round(0.3 * NS) + 1, message_class(data=True)),
            Record("/estop", bool_type, start + round(0.5 * NS), message_class(data=False)),
        ]

    bag = rewrite_bag(source_bag, tmp_path / "bags" / "estop", transform)
    config = IngestConfig.model_validate({"episodes": {"estop_topic": "/estop"}})
    _, report = ingest([bag], config, DATASET_ID, workers=1)
    first, second = report.bags[0].episodes
    assert (first.reason, first.steps, first.success) == ("estop", 15, False)
    assert second == baseline[0].bags[0].episodes[1]
    episode = next(minari.load_dataset(DATASET_ID).iterate_episodes())
    assert len(episode.actions) == 15 and episode.truncations[-1] and not episode.terminations.any()
    np.testing.assert_array_equal(episode.observations, baseline[1][0][:16])


def test_clock_that_leaps_forward_for_the_rest_of_the_bag(
    source_bag: Path, baseline: tuple[QualityReport, list[NDArray[Any]]], root: Path, tmp_path: Path
) -> None:
    """From 0.2 s into episode 1 to the end of the bag the stamps are hours ahead: dropped, episode 1 truncated."""
    records, _ = read_records(source_bag)
    begin = markers(records)[2][0] + 0.2 * NS
    expected = sum(1 for r in records if r.topic == JOINT_STATES and r.log_ns >= begin)
    assert 0 < expected < state_count(source_bag) / 2

    def transform(records: list[Record]) -> list[Record]:
        return [
            dataclasses.replace(r, message=with_stamp(r.message, stamp_ns(r.message) + 5 * 3600 * NS))
            if r.topic == JOINT_STATES and r.log_ns >= begin
            else r
            for r in records
        ]

    bag = rewrite_bag(source_bag, tmp_path / "bags" / "clock_leap", transform)
    report = run(bag)
    assert repairs(report, "joint_position") == counted(clock_jumps=expected)
    first, second = report.bags[0].episodes
    assert first == baseline[0].bags[0].episodes[0]
    assert second.kept and second.reason == "gap" and second.steps < baseline[0].bags[0].episodes[1].steps
    np.testing.assert_array_equal(observations()[0], baseline[1][0])


# ---------------------------------------------------------------- joints


@pytest.mark.parametrize(
    ("transform", "field"),
    [(drop_joint("elbow", 20), "joint_position"), (empty_velocity(20), "joint_velocity")],
    ids=["joint-missing-from-some-messages", "velocity-empty-in-some-messages"],
)
def test_messages_lacking_a_joint_are_dropped_and_counted(
    source_bag: Path, root: Path, tmp_path: Path, transform: Transform, field: str
) -> None:
    records, _ = read_records(source_bag)
    expected = len(every_nth(records, JOINT_STATES, 20))
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "missing_joint", transform)
    report = run(bag)
    affected = {"joint_position", "joint_velocity"} if field == "joint_position" else {field}
    for name in report.bags[0].repairs:
        assert repairs(report, name) == (counted(missing_joints=expected) if name in affected else counted()), name
    assert [e.kept for e in report.bags[0].episodes] == [True, True]
    assert len(observations()) == 2


@pytest.mark.parametrize(
    ("transform", "patterns"),
    [
        (rename_joint("elbow", "elbow_joint"), ("field joint_position", r"joints \['elbow'\] never appear")),
        (drop_joint("elbow", 1), ("field joint_position", r"joints \['elbow'\] never appear")),
        (empty_velocity(1), ("field joint_velocity", "no usable samples")),
        (nonfinite(JOINT_STATES, "position", np.nan, 1), ("field joint_position", "no usable samples")),
    ],
    ids=["joint-renamed", "joint-never-published", "velocity-always-empty", "position-always-nan"],
)
def test_field_without_any_usable_sample_is_an_error(
    source_bag: Path, root: Path, tmp_path: Path, transform: Transform, patterns: tuple[str, ...]
) -> None:
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "bad_joints", transform)
    assert_refused(root, bag, f"topic {JOINT_STATES}", *patterns)


@pytest.mark.parametrize(
    "order_for",
    [lambda k: CONFIG_JOINTS, lambda k: CONFIG_JOINTS[:: 1 if k % 2 else -1]],
    ids=["config-order", "alternating-order"],
)
def test_joint_order_is_mapped_by_name(
    source_bag: Path, root: Path, tmp_path: Path, order_for: Callable[[int], Sequence[str]]
) -> None:
    """The same bag with its joints listed in other orders gives exactly the same dataset."""
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "reordered", order_joints(order_for))
    differs = sum(1 for k in range(state_count(source_bag)) if tuple(order_for(k)) != CONFIG_JOINTS)
    _, original = ingest([source_bag], IngestConfig(), "symgate/original-v0", workers=1)
    _, reordered = ingest([bag], IngestConfig(), "symgate/reordered-v0", workers=1)
    assert reordered.bags[0].repairs["joint_position"]["joint_order_differs"] == differs
    assert original.bags[0].repairs["joint_position"]["joint_order_differs"] == state_count(source_bag)
    for name in reordered.bags[0].repairs:
        assert repairs(reordered, name) == counted(), name
    assert reordered.bags[0].episodes == original.bags[0].episodes
    a, b = minari.load_dataset("symgate/original-v0"), minari.load_dataset("symgate/reordered-v0")
    assert a.total_episodes == b.total_episodes == 2
    for ours, theirs in zip(a.iterate_episodes(), b.iterate_episodes(), strict=True):
        np.testing.assert_array_equal(ours.observations, theirs.observations)
        np.testing.assert_array_equal(ours.actions, theirs.actions)


# ---------------------------------------------------------------- empty bags and episodes


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3], ids=["mcap", "sqlite3"])
def test_empty_bag_is_skipped(
    source_bag: Path,
    baseline: tuple[QualityReport, list[NDArray[Any]]],
    root: Path,
    tmp_path: Path,
    storage: StoragePlugin,
) -> None:
    fleet = tmp_path / "fleet"
    copy_bag(source_bag, fleet / "robot_000")
    write_bag(fleet / "robot_001", [], read_records(source_bag)[1], storage=storage)
    _, report = ingest([fleet], IngestConfig(), DATASET_ID, workers=1)
    assert [b.bag for b in report.bags] == ["robot_000", "robot_001"]
    assert report.bags[1].skipped == "empty bag" and report.bags[1].episodes == []
    assert report.bags[0].skipped is None
    assert_same_observations(baseline[1])


def test_empty_bag_alone_is_an_error(source_bag: Path, root: Path, tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bags" / "robot_empty", [], read_records(source_bag)[1])
    assert_refused(root, bag, "no usable episodes")


def test_empty_bag_is_an_error_when_strict(source_bag: Path, root: Path, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    copy_bag(source_bag, fleet / "robot_000")
    write_bag(fleet / "robot_001", [], read_records(source_bag)[1])
    with pytest.raises(IngestError, match=r"robot_001.*holds no messages"):
        ingest([fleet], IngestConfig(), DATASET_ID, workers=1, strict=True)
    assert_nothing_written(root)


@pytest.mark.parametrize("duration_ns", [1, 5_000_000, 19_999_999], ids=["1ns", "5ms", "just-under-20ms"])
def test_episode_shorter_than_one_control_tick_is_dropped(
    source_bag: Path, baseline: tuple[QualityReport, list[NDArray[Any]]], root: Path, tmp_path: Path, duration_ns: int
) -> None:
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "short_episode", short_episode(duration_ns))
    report = run(bag)
    first, short, second = report.bags[0].episodes
    assert not short.kept and short.reason == "shorter than one control tick" and short.controller == "twitch"
    assert [first, second] == baseline[0].bags[0].episodes
    assert_same_observations(baseline[1])


def test_only_too_short_episodes_is_an_error(source_bag: Path, root: Path, tmp_path: Path) -> None:
    """Every episode ends 5 ms after it starts: no usable episode, nothing written."""

    def transform(records: list[Record]) -> list[Record]:
        starts = [t for t, payload in markers(records) if payload["event"] == "start"]
        rest = [r for r in records if r.topic != EPISODE]
        return rest + [
            m for t in starts for m in (marker(t, {"event": "start"}), marker(t + 5_000_000, {"event": "end"}))
        ]

    bag = rewrite_bag(source_bag, tmp_path / "bags" / "all_short", transform)
    assert_refused(root, bag, "no usable episodes")


def test_unreadable_marker_is_ignored_and_counted(
    source_bag: Path, baseline: tuple[QualityReport, list[NDArray[Any]]], root: Path, tmp_path: Path
) -> None:
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "garbled_marker", garbled_marker)
    report = run(bag)
    assert report.bags[0].bad_markers == 1
    assert report.bags[0].episodes == baseline[0].bags[0].episodes


# ---------------------------------------------------------------- strict mode


@pytest.mark.parametrize(
    ("transform", "patterns"),
    [
        (
            nonfinite(JOINT_STATES, "position", np.nan, 25),
            (f"topic {JOINT_STATES}", "field joint_position", "NaN or inf"),
        ),
        (nonfinite(COMMANDS, "data", np.inf, 25), (f"topic {COMMANDS}", "field joint_effort", "NaN or inf")),
        (swap_adjacent(20), (f"topic {JOINT_STATES}", "header.stamp goes backwards")),
        (duplicate_states(20), (f"topic {JOINT_STATES}", "duplicate header.stamp")),
        (clock_jump(3 * 3600), (f"topic {JOINT_STATES}", "header.stamp jumps more than 1 s")),
        (clock_jump(-3 * 3600), (f"topic {JOINT_STATES}", "header.stamp jumps more than 1 s")),
        (drop_joint("elbow", 20), (f"topic {JOINT_STATES}", "field joint_position", "lack a joint")),
        (empty_velocity(20), (f"topic {JOINT_STATES}", "field joint_velocity", "lack a joint")),
        (short_episode(5_000_000), ("episode dropped: shorter than one control tick",)),
        (garbled_marker, (f"topic {EPISODE}", "unreadable episode marker")),
    ],
    ids=[
        "position-nan",
        "command-inf",
        "out-of-order",
        "duplicate",
        "clock-jump-forward",
        "clock-jump-back",
        "joint-missing",
        "velocity-empty",
        "short-episode",
        "garbled-marker",
    ],
)
def test_strict_turns_every_repair_into_an_error(
    source_bag: Path, root: Path, tmp_path: Path, transform: Transform, patterns: tuple[str, ...]
) -> None:
    bag = rewrite_bag(source_bag, tmp_path / "bags" / "needs_repair", transform)
    run(bag)  # repaired without strict
    shutil.rmtree(root)
    assert_refused(root, bag, *patterns, strict=True)


# ---------------------------------------------------------------- atomicity and existing datasets


@pytest.mark.parametrize("workers", [1, 2], ids=["inline", "worker-processes"])
def test_one_broken_bag_fails_the_whole_ingest(source_bag: Path, root: Path, tmp_path: Path, workers: int) -> None:
    """One good and one broken bag: nothing is written, and a worker's IngestError reaches the caller intact."""
    fleet = tmp_path / "fleet"
    copy_bag(source_bag, fleet / "robot_000")
    rewrite_bag(source_bag, fleet / "robot_001", without_topic(COMMANDS))
    with pytest.raises(IngestError, match=rf"robot_001.*topic {COMMANDS}.*absent"):
        ingest([fleet], IngestConfig(), DATASET_ID, workers=workers)
    assert_nothing_written(root)


def test_existing_dataset_is_not_overwritten(source_bag: Path, root: Path, tmp_path: Path) -> None:
    folder, _ = ingest([source_bag], IngestConfig(), DATASET_ID, workers=1)
    before = tree_digest(folder)
    assert before and folder == root / DATASET_ID

    with pytest.raises(FileExistsError, match=re.escape(DATASET_ID)):
        ingest([source_bag], IngestConfig(), DATASET_ID, workers=1)
    assert tree_digest(folder) == before

    # a failing ingest may not touch the old dataset, even with overwrite=True
    broken = rewrite_bag(source_bag, tmp_path / "bags" / "no_goal", without_topic(GOAL))
    with pytest.raises(IngestError, match=rf"no_goal.*topic {GOAL}"):
        ingest([broken], IngestConfig(), DATASET_ID, workers=1, overwrite=True)
    assert tree_digest(folder) == before
    assert not list(root.glob(".symgate-ingest-*"))

    # overwrite=True replaces it
    fewer = rewrite_bag(source_bag, tmp_path / "bags" / "one_episode", short_episode(5_000_000))
    _, report = ingest([fewer], IngestConfig(), DATASET_ID, workers=1, overwrite=True)
    assert tree_digest(folder) != before and report.bags[0].bag == "one_episode"
    assert minari.load_dataset(DATASET_ID).total_episodes == 2
    assert not list(root.glob(".symgate-ingest-*"))
