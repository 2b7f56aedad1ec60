"""Decoding a bag's CDR messages leniently, with the bag's own message definitions.

Bags from other loggers carry message types we do not know (vendor messages), definitions that
do not parse, or messages whose CDR carries bytes after the last field (some serialisers pad or
append). rosbags' ``AnyReader`` refuses the whole bag for the first two and every such message
for the last. Here each type is resolved on its own: from the bag's definition when it has one
that parses, else from ROS 2 Jazzy's standard types; a type neither knows is *unknown*, which only
matters if a mapped field needs it. Decoding returns the number of trailing bytes so the caller
can count the repair (or refuse it under ``--strict``).

Standard ``sensor_msgs/JointState`` topics, the bulk of every bag, are decoded in bulk
(:func:`decode_joint_states`): messages sharing one layout (length, frame, names, array sizes)
become numpy views of one byte matrix, checked byte for byte against their layout; messages of
other layouts go through rosbags one by one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from rosbags.interfaces import Connection, MessageDefinition, MessageDefinitionFormat
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

# CDR pads a message to a multiple of 4 bytes; up to 3 bytes after the last field are normal.
_CDR_PADDING = 3
_IDL_SEPARATOR = "=" * 80 + "\n"


@cache
def _standard_types() -> Typestore:
    return get_typestore(Stores.ROS2_JAZZY)


def _parse(msgtype: str, definition: MessageDefinition) -> dict[str, Any]:
    """The types an embedded definition declares (empty when there is none)."""
    if definition.format == MessageDefinitionFormat.MSG:
        return dict(get_types_from_msg(definition.data, msgtype))
    if definition.format == MessageDefinitionFormat.IDL:
        types: dict[str, Any] = {}
        chunks = definition.data.split(_IDL_SEPARATOR)[1:] if definition.data.startswith(_IDL_SEPARATOR) else []
        for chunk in chunks or [definition.data]:
            types.update(get_types_from_idl(chunk.split("\n", 1)[1] if chunks else chunk))
        return types
    return {}


@cache
def _resolve(
    definitions: tuple[tuple[str, MessageDefinition], ...],
) -> tuple[dict[str, Typestore], dict[str, str]]:
    """The store decoding each type, and why the others cannot be (cached: bags of one fleet share definitions)."""
    bag_types = get_typestore(Stores.EMPTY)
    stores: dict[str, Typestore] = {}
    problems: dict[str, str] = {}
    for msgtype, definition in definitions:
        if msgtype in stores:
            continue
        try:
            types = _parse(msgtype, definition)
            if types:
                bag_types.register(types)
                bag_types.get_msgdef(msgtype)  # every field type resolves
                stores[msgtype] = bag_types
                problems.pop(msgtype, None)
                continue
        except Exception as error:  # a definition that does not parse or contradicts another one
            problems[msgtype] = f"its message definition in the bag is unusable ({error})"
            continue
        if msgtype in _standard_types().fielddefs:
            stores[msgtype] = _standard_types()
        else:
            problems[msgtype] = "the bag lacks its message definition and it is not a standard ROS 2 type"
    return stores, problems


class Decoder:
    """Per-type CDR decoders for one bag's connections."""

    def __init__(self, connections: Iterable[Connection]) -> None:
        definitions = tuple(dict.fromkeys((c.msgtype, c.msgdef) for c in connections))
        stores, problems = _resolve(definitions)
        self._store = stores
        self.problems = dict(problems)  # msgtype → why it cannot be decoded
        self._functions: dict[str, tuple[Any, Any, Any, Typestore]] = {}

    def standard_joint_state(self) -> bool:
        """Whether the bag's JointState is the standard one (so :func:`decode_joint_states` applies)."""
        store = self._store.get(JOINT_STATE)
        return store is not None and all(
            store.fielddefs.get(t) == _standard_types().fielddefs[t] for t in _JOINT_STATE_TYPES
        )

    def known(self, msgtype: str) -> bool:
        """Whether messages of this type can be decoded."""
        return msgtype in self._store

    def decode(self, raw: bytes | memoryview, msgtype: str) -> tuple[Any, int]:
        """Decode one CDR message.

        Returns:
            The message, and how many bytes follow its last field (0 when no more than CDR's padding).

        Raises:
            ValueError: The data is not a valid CDR message of this type.
        """
        functions = self._functions.get(msgtype)
        if functions is None:
            store = self._store[msgtype]
            msgdef = store.get_msgdef(msgtype)
            functions = self._functions[msgtype] = (
                msgdef.deserialize_cdr_le,
                msgdef.deserialize_cdr_be,
                msgdef.cls,
                store,
            )
        little, big, cls, store = functions
        header = bytes(raw[:2])
        if len(raw) < 4 or header not in (b"\x00\x00", b"\x00\x01"):
            raise ValueError("invalid or unsupported CDR encapsulation")
        try:
            message, end = (little if header == b"\x00\x01" else big)(raw[4:], 0, cls, store)
        except Exception as error:  # struct.error, UnicodeDecodeError, IndexError, ... on truncated data
            raise ValueError(f"{type(error).__name__}: {error}") from error
        excess = len(raw) - 4 - end
        return message, excess if excess > _CDR_PADDING else 0


JOINT_STATE = "sensor_msgs/msg/JointState"
_JOINT_STATE_TYPES = (JOINT_STATE, "std_msgs/msg/Header", "builtin_interfaces/msg/Time")
JOINT_STATE_ARRAYS = ("position", "velocity", "effort")
_MAX_TEMPLATES = 16  # distinct layouts decoded in bulk per topic; messages of further layouts go one by one


@dataclass
class JointStateBatch:
    """Messages of one JointState layout (same length, frame, names and array sizes), decoded at once."""

    seq: NDArray[np.int64]  # which of the topic's messages, in arrival order
    header_ns: NDArray[np.int64]
    names: tuple[str, ...]
    arrays: dict[str, NDArray[np.float64]]  # position, velocity, effort: (n, length)
    trailing_bytes: int  # bytes after the last field (0 when no more than CDR padding)


class _Layout(NamedTuple):
    little: bool
    names: tuple[str, ...]
    arrays: dict[str, tuple[int, int]]  # name → (offset in the raw message, count)
    end: int  # offset just after the last field


def _joint_state_layout(raw: NDArray[np.uint8]) -> _Layout:
    """Parse one JointState's structure (offsets relative to the raw message, encapsulation included)."""
    data = raw.tobytes()
    if len(data) < 12 or data[:2] not in (b"\x00\x00", b"\x00\x01"):
        raise ValueError("invalid or unsupported CDR encapsulation")
    little = data[1] == 1
    u32 = struct.Struct("<I" if little else ">I").unpack_from
    pos = 12  # encapsulation (4), stamp sec (4), nanosec (4)

    def uint32() -> int:
        nonlocal pos
        pos += -(pos - 4) % 4
        (value,) = u32(data, pos)
        pos += 4
        return int(value)

    def string() -> str:
        nonlocal pos
        size = uint32()
        if size == 0 or pos + size > len(data) or data[pos + size - 1] != 0:
            raise ValueError("string overruns the message or lacks its terminator")
        text = data[pos : pos + size - 1].decode()
        pos += size
        return text

    string()  # frame_id
    names = tuple(string() for _ in range(uint32()))
    arrays = {}
    for name in JOINT_STATE_ARRAYS:
        count = uint32()
        if count:
            pos += -(pos - 4) % 8
        arrays[name] = (pos, count)
        pos += 8 * count
    if pos > len(data):
        raise ValueError("message ends inside a field")
    return _Layout(little, names, arrays, pos)


def decode_joint_states(raws: list[bytes | memoryview]) -> tuple[list[JointStateBatch], list[int]]:
    """Decode standard JointState messages in bulk, one numpy pass per layout.

    Messages are grouped by length; within a group, every byte except the stamp and the float
    arrays must equal the group's first message (same frame, names, counts, padding and trailing
    bytes) to be decoded with it. The rest are returned for one-by-one decoding.

    Returns:
        The batches and the indices of the messages left over (in arrival order).
    """
    by_length: dict[int, list[int]] = {}
    for index, raw in enumerate(raws):
        by_length.setdefault(len(raw), []).append(index)
    batches, left = [], []
    for length, members in by_length.items():
        rows = np.frombuffer(b"".join(raws[i] for i in members), dtype=np.uint8).reshape(len(members), length)
        pending = np.arange(len(members))
        for _ in range(_MAX_TEMPLATES):
            if len(pending) == 0:
                break
            try:
                layout = _joint_state_layout(rows[pending[0]])
            except (ValueError, struct.error, UnicodeDecodeError):
                left.append(members[int(pending[0])])
                pending = pending[1:]
                continue
            structure = np.ones(length, dtype=bool)
            structure[4:12] = False
            for offset, count in layout.arrays.values():
                structure[offset : offset + 8 * count] = False
            same = (rows[pending][:, structure] == rows[pending[0], structure]).all(axis=1)
            group, pending = pending[same], pending[~same]
            block = rows[group]
            order = "<" if layout.little else ">"
            sec = np.ascontiguousarray(block[:, 4:8]).view(order + "i4")[:, 0].astype(np.int64)
            nanosec = np.ascontiguousarray(block[:, 8:12]).view(order + "u4")[:, 0].astype(np.int64)
            arrays = {
                name: np.ascontiguousarray(block[:, offset : offset + 8 * count]).view(order + "f8").astype(np.float64)
                for name, (offset, count) in layout.arrays.items()
            }
            excess = length - layout.end
            batches.append(
                JointStateBatch(
                    seq=np.array([members[i] for i in group], dtype=np.int64),
                    header_ns=sec * 1_000_000_000 + nanosec,
                    names=layout.names,
                    arrays=arrays,
                    trailing_bytes=excess if excess > _CDR_PADDING else 0,
                )
            )
        left.extend(members[int(i)] for i in pending)
    return batches, sorted(left)
