"""Reading one ROS 2 bag into clean, named, timestamped signals.

Each configured field becomes a :class:`Signal` (strictly increasing int64 ns times, float64
values). Problems that can be repaired safely are repaired and counted (see :class:`FieldIssues`);
with ``strict`` every one of them is an :class:`IngestError` instead. Problems that make the bag
untrustworthy (unreadable file, missing required topic, wrong message type, a joint that never
appears) are always errors. Every error names the bag, and where it applies the topic, field and
time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial, reduce
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rosbags.rosbag2 import Reader

from pipeline.ingest.config import FieldMapping, IngestConfig, TopicSuccess
from pipeline.ingest.decode import JOINT_STATE, JOINT_STATE_ARRAYS, Decoder, JointStateBatch, decode_joint_states
from pipeline.ingest.resample import Times, Values
from pipeline.io import UserInputError

STRING = "std_msgs/msg/String"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
BOOL = "std_msgs/msg/Bool"


class IngestError(UserInputError):
    """Bad input that ingestion refuses; the message names bag, topic, field, time and problem."""

    def __init__(
        self,
        bag: Path | str,
        problem: str,
        *,
        topic: str | None = None,
        field: str | None = None,
        time_ns: int | None = None,
    ) -> None:
        self.bag, self.problem, self.topic, self.field, self.time_ns = str(bag), problem, topic, field, time_ns
        where = [str(bag)]
        if topic:
            where.append(f"topic {topic}")
        if field:
            where.append(f"field {field}")
        if time_ns is not None:
            where.append(f"t={time_ns / 1e9:.9f} s")
        super().__init__(f"{', '.join(where)}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by constructor arguments, so the error crosses process boundaries (parallel workers)."""
        rebuild = partial(type(self), topic=self.topic, field=self.field, time_ns=self.time_ns)
        return rebuild, (self.bag, self.problem)


class EmptyBagError(IngestError):
    """The bag holds no messages (skipped unless strict)."""


@dataclass
class Signal:
    """A field's samples: strictly increasing times (ns) and values ``(n, d)``."""

    times: Times
    values: Values


@dataclass
class FieldIssues:
    """Repairs made to one field's samples, each counted."""

    nonfinite: int = 0  # samples with NaN/inf dropped
    clock_jumps: int = 0  # samples whose header.stamp jumped away from log time, dropped
    duplicate_stamps: int = 0  # repeated stamps, later copies dropped
    out_of_order: int = 0  # stamps that went backwards (within the skew), re-sorted
    missing_joints: int = 0  # messages lacking a configured joint, dropped
    joint_order_differs: int = 0  # messages whose joints were listed in another order, mapped by name

    def total_dropped(self) -> int:
        """Samples dropped by all repairs."""
        return self.nonfinite + self.clock_jumps + self.duplicate_stamps + self.missing_joints


@dataclass
class TopicStats:
    """What a topic looked like in the bag."""

    messages: int
    rate_hz: float
    largest_gap_s: float
    jitter_s: float


@dataclass
class BagSignals:
    """Everything ingestion uses from one bag."""

    path: Path
    fields: dict[str, Signal]
    issues: dict[str, FieldIssues]
    topics: dict[str, TopicStats]
    markers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    estops: list[tuple[int, bool]] = field(default_factory=list)
    successes: list[int] = field(default_factory=list)  # log times of success messages (reward kind success_topic)
    bad_markers: int = 0
    trailing_bytes: dict[str, int] = field(default_factory=dict)  # per topic: messages with bytes after their end
    start_ns: int = 0
    end_ns: int = 0


def _get(message: Any, path: str) -> Any:
    return reduce(getattr, path.split("."), message)


def _stamp(message: Any) -> int:
    stamp = message.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class _FieldReader:
    """Extracts one field from messages of its topic, mapping joints by name."""

    def __init__(self, name: str, mapping: FieldMapping, bag: Path) -> None:
        self.name, self.mapping, self.bag = name, mapping, bag
        self.times: list[int] = []
        self.log_times: list[int] = []
        self.rows: list[NDArray[np.float64]] = []
        self.seq: list[int] = []  # arrival order of each sample, so bulk-decoded ones interleave correctly
        self.chunks: list[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]] = []
        self.issues = FieldIssues()
        # Per distinct joint-name list: (index of each configured joint, minimum array length, order differs).
        self._index_by_names: dict[tuple[str, ...], tuple[NDArray[np.intp], int, bool] | None] = {}
        self.seen_joints: set[str] = set()
        self._default_names: tuple[str, ...] = mapping.joint_order or (
            (mapping.joints or ()) if mapping.names_path is None else ()
        )

    def _joint_index(self, message: Any, length: int, log_ns: int) -> tuple[NDArray[np.intp], int, bool] | None:
        names_path = self.mapping.names_path
        listed: tuple[str, ...] = tuple(_get(message, names_path)) if names_path is not None else ()
        return self._index_for(listed, length, log_ns)

    def _index_for(
        self, listed: tuple[str, ...], length: int, log_ns: int
    ) -> tuple[NDArray[np.intp], int, bool] | None:
        names_path = self.mapping.names_path
        names = listed or self._default_names
        if length and length != len(names):
            if listed:
                problem = f"{length} values for the {len(names)} names {list(names)} of the message"
            elif names:
                problem = f"{length} values for the {len(names)} joints the mapping names {list(names)}"
            else:
                problem = f"{length} values and an empty {names_path} array (give the mapping a joint_order)"
            raise IngestError(
                self.bag,
                f"{self.mapping.path} has {problem}: which value belongs to which joint is unknown "
                "(a controller with another joint count would be mis-mapped)",
                topic=self.mapping.topic,
                field=self.name,
                time_ns=log_ns,
            )
        if names not in self._index_by_names:
            joints = self.mapping.joints or ()
            self.seen_joints.update(names)
            if all(joint in names for joint in joints):
                index = np.array([names.index(j) for j in joints])
                self._index_by_names[names] = (index, int(index.max()) + 1, names[: len(joints)] != joints)
            else:
                self._index_by_names[names] = None
        return self._index_by_names[names]

    def add_batch(self, batch: JointStateBatch, log_ns: NDArray[np.int64]) -> None:
        """Extract this field from a batch of bulk-decoded JointState messages (``log_ns``: their log times)."""
        array = batch.arrays[self.mapping.path or ""]
        listed = batch.names if self.mapping.names_path is not None else ()
        entry = self._index_for(listed, array.shape[1], int(log_ns[0]))
        if entry is None or array.shape[1] == 0:
            self.issues.missing_joints += len(log_ns)
            return
        index, _, order_differs = entry
        self.issues.joint_order_differs += order_differs * len(log_ns)
        times = log_ns if self.mapping.time_base == "log" else batch.header_ns
        self.chunks.append((times, log_ns, array[:, index], batch.seq))

    def add_trajectory(self, message: Any, log_ns: int, header_ns: int) -> None:
        """Extract this field from a JointTrajectory: one sample per point, at its start plus ``time_from_start``.

        The trajectory starts at ``header.stamp`` (0, by ROS convention "now", or time_base log: the log time).
        A new trajectory replaces the rest of the previous one: its samples from the new start on are dropped.
        """
        start = log_ns if self.mapping.time_base == "log" or header_ns == 0 else header_ns
        while self.times and self.times[-1] >= start:
            self.times.pop()
            self.log_times.pop()
            self.rows.pop()
            self.seq.pop()
        names = tuple(message.joint_names)
        for point in message.points:
            array = _get(point, self.mapping.path or "")
            entry = self._index_for(names, len(array), log_ns)
            if entry is None or len(array) == 0:
                self.issues.missing_joints += 1
                continue
            index, _, order_differs = entry
            self.issues.joint_order_differs += order_differs
            offset = int(point.time_from_start.sec) * 1_000_000_000 + int(point.time_from_start.nanosec)
            self.times.append(start + offset)
            self.log_times.append(log_ns + offset)
            self.rows.append(np.asarray(array, dtype=np.float64)[index])
            self.seq.append(0)

    def add(self, message: Any, log_ns: int, header_ns: int, seq: int = 0) -> None:
        """Extract this field from one message (``header_ns``: its header.stamp, or log time if none)."""
        if self.mapping.msgtype == JOINT_TRAJECTORY:
            self.add_trajectory(message, log_ns, header_ns)
            return
        if self.mapping.components is not None:
            row = np.array([float(_get(message, path)) for path in self.mapping.components])
        else:
            array = _get(message, self.mapping.path or "")
            entry = self._joint_index(message, len(array), log_ns)
            if entry is None or len(array) == 0:  # a joint or the whole array absent: drop the sample (counted)
                self.issues.missing_joints += 1
                return
            index, _, order_differs = entry
            self.issues.joint_order_differs += order_differs
            row = np.asarray(array, dtype=np.float64)[index]
        self.times.append(log_ns if self.mapping.time_base == "log" else header_ns)
        self.log_times.append(log_ns)
        self.rows.append(row)
        self.seq.append(seq)

    def samples(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
        """Times, log times and values of every sample, in arrival order."""
        width = len(self.mapping.component_names)
        times = np.array(self.times, dtype=np.int64)
        log_times = np.array(self.log_times, dtype=np.int64)
        values = np.array(self.rows, dtype=np.float64).reshape(len(times), width)
        if not self.chunks:
            return times, log_times, values
        seq = np.concatenate([np.array(self.seq, dtype=np.int64), *(c[3] for c in self.chunks)])
        order = np.argsort(seq, kind="stable")
        times = np.concatenate([times, *(c[0] for c in self.chunks)])[order]
        log_times = np.concatenate([log_times, *(c[1] for c in self.chunks)])[order]
        values = np.concatenate([values, *(c[2] for c in self.chunks)])[order]
        return times, log_times, values


def _clean(reader: _FieldReader, bag: Path, max_skew_ns: int, strict: bool) -> Signal:
    """Drop non-finite samples and clock jumps, de-duplicate and sort; count every repair."""
    mapping, issues = reader.mapping, reader.issues
    times, log_times, values = reader.samples()

    def fail_or_count(mask: NDArray[np.bool_], problem: str) -> NDArray[np.bool_]:
        if strict and mask.any():
            first = int(np.flatnonzero(mask)[0])
            raise IngestError(bag, problem, topic=mapping.topic, field=reader.name, time_ns=int(times[first]))
        return ~mask

    if strict and issues.missing_joints:
        raise IngestError(
            bag,
            f"{issues.missing_joints} messages lack a joint of {list(mapping.joints or ())}",
            topic=mapping.topic,
            field=reader.name,
        )
    finite = np.asarray(np.isfinite(values).all(axis=1), dtype=bool)
    keep = fail_or_count(~finite, "NaN or inf value")
    issues.nonfinite = int((~finite).sum())
    if mapping.time_base != "log" and keep.any():
        offset = times - log_times
        usual = float(np.median(offset[keep]))
        if abs(usual) > max_skew_ns and mapping.time_base == "header":
            raise IngestError(
                bag,
                f"header.stamp is {usual / 1e9:+.3f} s from log time on median: the robot and logger clocks are not "
                "synchronised (fix the clocks, or use time_base: header_shifted or log for this field)",
                topic=mapping.topic,
                field=reader.name,
            )
        jump = keep & (np.abs(offset - usual) > max_skew_ns)
        keep &= fail_or_count(jump, f"header.stamp jumps more than {max_skew_ns / 1e9:g} s away from log time")
        issues.clock_jumps = int(jump.sum())
        if mapping.time_base == "header_shifted" and keep.any():  # onto the log clock, at the least latency seen
            times = times - int(offset[keep].max())
    times, values = times[keep], values[keep]
    backwards = np.diff(times) < 0
    if backwards.any():
        fail_or_count(np.concatenate([[False], backwards]), "header.stamp goes backwards")
        issues.out_of_order = int(backwards.sum())
        order = np.argsort(times, kind="stable")
        times, values = times[order], values[order]
    duplicate = np.zeros(len(times), dtype=bool)
    duplicate[1:] = np.diff(times) == 0
    keep = fail_or_count(duplicate, "duplicate header.stamp")
    issues.duplicate_stamps = int(duplicate.sum())
    return Signal(times[keep], values[keep])


def _topic_stats(times: Times, max_gap_ns: int) -> TopicStats:
    if len(times) < 2:
        return TopicStats(messages=len(times), rate_hz=0.0, largest_gap_s=0.0, jitter_s=0.0)
    periods = np.diff(times) / 1e9
    regular = periods[periods <= max_gap_ns / 1e9]
    mean = float(regular.mean()) if len(regular) else float(periods.mean())
    return TopicStats(
        messages=len(times),
        rate_hz=1.0 / mean if mean > 0 else 0.0,
        largest_gap_s=float(periods.max()),
        jitter_s=float(regular.std()) if len(regular) else 0.0,
    )


def _count_trailing(
    path: Path, topic: str, msgtype: str, trailing: int, count: int, log_ns: int, signals: BagSignals, strict: bool
) -> None:
    """Count ``count`` messages with ``trailing`` bytes after their end (an error under ``strict``)."""
    if strict:
        raise IngestError(
            path,
            f"{trailing} bytes after the end of a {msgtype} message (lenient decoding drops them; --strict refuses)",
            topic=topic,
            time_ns=log_ns,
        )
    signals.trailing_bytes[topic] = signals.trailing_bytes.get(topic, 0) + count


def _read_bulk(
    path: Path,
    topic: str,
    raws: list[bytes | memoryview],
    log_ns: NDArray[np.int64],
    field_readers: list[_FieldReader],
    decoder: Decoder,
    signals: BagSignals,
    strict: bool,
) -> None:
    """Decode a JointState topic's messages in bulk; messages of rare layouts one by one."""
    batches, left = decode_joint_states(raws)
    for batch in sorted(batches, key=lambda b: int(b.seq[0])):
        if batch.trailing_bytes:
            first = int(log_ns[batch.seq[0]])
            _count_trailing(path, topic, JOINT_STATE, batch.trailing_bytes, len(batch.seq), first, signals, strict)
        for field_reader in field_readers:
            field_reader.add_batch(batch, log_ns[batch.seq])
    for index in left:
        time_ns = int(log_ns[index])
        try:
            message, trailing = decoder.decode(raws[index], JOINT_STATE)
        except ValueError as error:
            raise IngestError(path, f"cannot decode {JOINT_STATE}: {error}", topic=topic, time_ns=time_ns) from error
        if trailing:
            _count_trailing(path, topic, JOINT_STATE, trailing, 1, time_ns, signals, strict)
        for field_reader in field_readers:
            field_reader.add(message, time_ns, _stamp(message), seq=index)


def read_bag(path: Path, config: IngestConfig, *, strict: bool = False) -> BagSignals:
    """Read and clean every configured field of one bag.

    Args:
        path: A rosbag2 folder (MCAP or sqlite3 storage) or a bare ``.mcap`` file (no ``metadata.yaml``).
        config: The ingest mapping.
        strict: Turn every repair into an error.

    Returns:
        The bag's cleaned signals, markers, e-stop events, per-topic statistics and repair counts.

    Raises:
        IngestError: The bag cannot be trusted (or a repair was needed under ``strict``).
        EmptyBagError: The bag holds no messages.
    """
    mappings = {**config.observations, **config.action}
    rules = config.episodes
    try:
        with Reader(path) as reader:
            if reader.message_count == 0:
                raise EmptyBagError(path, "the bag holds no messages")
            by_topic = {c.topic: c for c in reader.connections}
            decoder = Decoder(by_topic.values())
            readers: dict[str, list[_FieldReader]] = {}
            for name, mapping in mappings.items():
                connection = by_topic.get(mapping.topic)
                if connection is None or connection.msgcount == 0:
                    raise IngestError(path, "required topic is absent or empty", topic=mapping.topic, field=name)
                if connection.msgtype != mapping.msgtype:
                    raise IngestError(
                        path,
                        f"message type {connection.msgtype}, config expects {mapping.msgtype}",
                        topic=mapping.topic,
                        field=name,
                    )
                if not decoder.known(connection.msgtype):
                    raise IngestError(
                        path,
                        f"cannot decode {connection.msgtype}: {decoder.problems[connection.msgtype]}",
                        topic=mapping.topic,
                        field=name,
                    )
                readers.setdefault(mapping.topic, []).append(_FieldReader(name, mapping, path))
            success = config.reward if isinstance(config.reward, TopicSuccess) else None
            optional = {
                topic: msgtype
                for topic, msgtype in (
                    (rules.marker_topic, STRING),
                    (rules.estop_topic, BOOL),
                    (success.topic, success.msgtype) if success else (None, ""),
                )
                if topic
            }
            for topic, msgtype in optional.items():
                if topic in by_topic and by_topic[topic].msgtype != msgtype:
                    raise IngestError(path, f"message type {by_topic[topic].msgtype}, expected {msgtype}", topic=topic)
                if topic in by_topic and not decoder.known(msgtype):
                    raise IngestError(path, f"cannot decode {msgtype}: {decoder.problems[msgtype]}", topic=topic)
            wanted = [by_topic[t] for t in (*readers, *optional) if t in by_topic]
            signals = BagSignals(path=path, fields={}, issues={}, topics={})
            # Standard JointState topics read only for arrays are decoded in bulk after the loop (decode.py).
            bulk: dict[str, tuple[list[bytes | memoryview], list[int]]] = {
                topic: ([], [])
                for topic, field_readers in readers.items()
                if by_topic[topic].msgtype == JOINT_STATE
                and decoder.standard_joint_state()
                and topic not in optional
                and all(r.mapping.path in JOINT_STATE_ARRAYS for r in field_readers)
            }
            for connection, log_ns, raw in reader.messages(connections=wanted):
                if connection.topic in bulk:
                    raws, logs = bulk[connection.topic]
                    raws.append(raw)
                    logs.append(log_ns)
                    continue
                try:
                    message: Any
                    message, trailing = decoder.decode(raw, connection.msgtype)
                except ValueError as error:
                    raise IngestError(
                        path, f"cannot decode {connection.msgtype}: {error}", topic=connection.topic, time_ns=log_ns
                    ) from error
                if trailing:
                    _count_trailing(path, connection.topic, connection.msgtype, trailing, 1, log_ns, signals, strict)
                if connection.topic == rules.marker_topic:
                    try:
                        payload = json.loads(message.data)
                        if not isinstance(payload, dict) or payload.get("event") not in ("start", "end"):
                            raise ValueError("no start/end event")
                    except ValueError as error:
                        if strict:
                            raise IngestError(
                                path,
                                f"unreadable episode marker {message.data!r}",
                                topic=connection.topic,
                                time_ns=log_ns,
                            ) from error
                        signals.bad_markers += 1
                        continue
                    signals.markers.append((log_ns, payload))
                elif connection.topic == rules.estop_topic:
                    signals.estops.append((log_ns, bool(message.data)))
                elif success and connection.topic == success.topic and message.data in (True, success.value):
                    signals.successes.append(log_ns)
                field_readers = readers.get(connection.topic, ())
                if field_readers:
                    header_ns = _stamp(message) if hasattr(message, "header") else log_ns
                    for field_reader in field_readers:
                        field_reader.add(message, log_ns, header_ns)
            for topic, (raws, logs) in bulk.items():
                _read_bulk(path, topic, raws, np.array(logs, dtype=np.int64), readers[topic], decoder, signals, strict)
            signals.start_ns, signals.end_ns = reader.start_time, reader.end_time
            counts = {c.topic: c.msgcount for c in reader.connections}
    except IngestError:
        raise
    except Exception as error:  # unreadable storage: truncated MCAP, broken sqlite3, bad metadata
        raise IngestError(path, f"cannot read bag: {type(error).__name__}: {error}") from error

    max_skew_ns = round(config.max_clock_skew_s * 1e9)
    max_gap_ns = round(rules.max_gap_s * 1e9)
    for topic, field_readers in readers.items():
        for field_reader in field_readers:
            missing = set(field_reader.mapping.joints or ()) - field_reader.seen_joints
            if field_reader.mapping.names_path is not None and missing:
                raise IngestError(
                    path,
                    f"joints {sorted(missing)} never appear (joints seen: {sorted(field_reader.seen_joints)})",
                    topic=topic,
                    field=field_reader.name,
                )
            signal = _clean(field_reader, path, max_skew_ns, strict)
            if len(signal.times) == 0:
                raise IngestError(path, "no usable samples left after repairs", topic=topic, field=field_reader.name)
            signals.fields[field_reader.name] = signal
            signals.issues[field_reader.name] = field_reader.issues
        signals.topics[topic] = _topic_stats(signals.fields[field_readers[0].name].times, max_gap_ns)
    for topic in optional:
        if topic in counts:
            events = {
                rules.marker_topic: [t for t, _ in signals.markers],
                rules.estop_topic: [t for t, _ in signals.estops],
            }
            times = np.array(events.get(topic, signals.successes), dtype=np.int64)
            signals.topics[topic] = _topic_stats(times, max_gap_ns)
    return signals
