"""Bulk JointState decoding agrees with rosbags' own decoder message by message, whatever the mix of layouts."""

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_typestore

from pipeline.ingest.decode import decode_joint_states

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
T = TYPESTORE.types
JOINT_STATE = "sensor_msgs/msg/JointState"

message_strategy = st.fixed_dictionaries(
    {
        "sec": st.integers(-(2**31), 2**31 - 1),
        "nanosec": st.integers(0, 999_999_999),
        "frame": st.sampled_from(["", "base", "world_frame"]),
        "names": st.sampled_from([(), ("a",), ("elbow", "wrist", "shoulder"), ("shoulder", "elbow")]),
        "velocity": st.booleans(),
        "little": st.booleans(),
        "trailing": st.sampled_from([b"", b"\x00" * 8, b"\x07" * 5]),
        "truncate": st.booleans(),
    }
)


def serialise(spec: dict[str, Any], rng: np.random.Generator) -> bytes:
    n = len(spec["names"])
    message = T[JOINT_STATE](
        header=T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=spec["sec"], nanosec=spec["nanosec"]), frame_id=spec["frame"]
        ),
        name=list(spec["names"]),
        position=rng.normal(size=n),
        velocity=rng.normal(size=n) if spec["velocity"] else np.array([], dtype=np.float64),
        effort=np.array([], dtype=np.float64),
    )
    raw = bytes(TYPESTORE.serialize_cdr(message, JOINT_STATE, little_endian=spec["little"])) + spec["trailing"]
    return bytes(raw[: len(raw) // 2] if spec["truncate"] else raw)


@settings(max_examples=60, deadline=None)
@given(specs=st.lists(message_strategy, min_size=1, max_size=40), seed=st.integers(0, 2**32 - 1))
def test_bulk_decoding_matches_rosbags_message_by_message(specs: list[dict[str, Any]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    raws: list[bytes | memoryview] = [serialise(spec, rng) for spec in specs]
    batches, left = decode_joint_states(raws)
    decoded: dict[int, tuple[int, tuple[str, ...], dict[str, Any], int]] = {}
    for batch in batches:
        for row, index in enumerate(batch.seq.tolist()):
            arrays = {name: values[row] for name, values in batch.arrays.items()}
            decoded[index] = (int(batch.header_ns[row]), batch.names, arrays, batch.trailing_bytes)
    assert sorted([*decoded, *left]) == list(range(len(raws)))  # every message exactly once
    for index, raw in enumerate(raws):
        spec = specs[index]
        if index not in decoded:  # left for one-by-one decoding (rosbags then decodes or refuses it)
            continue
        stamp, names, arrays, trailing = decoded[index]
        reference: Any = TYPESTORE.deserialize_cdr(raw[: len(raw) - len(spec["trailing"])], JOINT_STATE)
        assert stamp == reference.header.stamp.sec * 1_000_000_000 + reference.header.stamp.nanosec
        assert list(names) == list(reference.name)
        for name in ("position", "velocity", "effort"):
            np.testing.assert_array_equal(arrays[name], getattr(reference, name))
        assert trailing == (len(spec["trailing"]) if len(spec["trailing"]) > 3 else 0)
    assert all(not specs[i]["truncate"] for i in decoded)
