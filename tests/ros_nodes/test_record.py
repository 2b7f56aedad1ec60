"""``symgate serve --sim --record``: the rehearsal's topics recorded over DDS into an MCAP file."""

import json
from pathlib import Path
from typing import Any

import numpy as np
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from pipeline.serve.launch import rehearse
from sim.robot import load_robot_description
from tests.ros_nodes.conftest import Models


def test_the_rehearsal_is_recorded_with_tf_and_episode_markers(ros: None, models: Models, tmp_path: Path) -> None:
    trusted = {"trusted_keys": [str(models.trusted_key)]}
    path = tmp_path / "rehearsal.mcap"
    outcome = rehearse(models.certified, "test", count=2, speedup=1.0, server_parameters=trusted, record=path)
    topics: dict[str, list[Any]] = {}
    with path.open("rb") as stream:  # read by the mcap library, not by rosbags that wrote it
        for _, channel, _, message in make_reader(stream, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            topics.setdefault(channel.topic, []).append(message)
    assert len(topics["/joint_states"]) == len(topics["/tf"]) > 100 and topics["/goal"] and topics["/joint_commands"]
    assert "<robot" in topics["/robot_description"][0].data
    markers = [json.loads(m.data) for m in topics["/serve/episode"]]
    assert [m["success"] for m in markers] == [e["success"] for e in outcome["episodes"]] == [True, True]
    assert all(m["certificate_id"] == outcome["diagnostics"]["certificate_id"] != "UNCERTIFIED" for m in markers)
    robot = load_robot_description()
    static = {t.child_frame_id: t for t in topics["/tf_static"][0].transforms}
    for state, tf in zip(topics["/joint_states"], topics["/tf"], strict=True):
        assert list(state.name) == ["elbow", "shoulder"]  # the sim robot's order, bytes as they came over DDS
        q = dict(zip(state.name, state.position, strict=True))
        edges = {**static, **{t.child_frame_id: t for t in tf.transforms}}
        stamp = edges["upper_arm"].header.stamp
        assert (stamp.sec, stamp.nanosec) == (state.header.stamp.sec, state.header.stamp.nanosec)  # the JointState's
        hand = compose(edges, robot.hand_link)
        _, expected = robot.forward_kinematics([q["shoulder"], q["elbow"]])
        assert np.abs(hand[:2] - expected).max() < 1e-9  # TF from the URDF = the reacher's FK, m


def compose(edges: dict[str, Any], link: str) -> np.ndarray:
    """The position of ``link`` in the TF tree's root frame."""
    position = np.zeros(3)
    while link in edges:
        t = edges[link].transform
        x, y, z, w = t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w
        rotation = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        position = rotation @ position + np.array([t.translation.x, t.translation.y, t.translation.z])
        link = edges[link].header.frame_id
    return position
