import json
from pathlib import Path
from typing import Any

import numpy as np
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from pipeline.export import load_contract
from pipeline.gate import RECORDING_FILE, REPORT_MD, run_gate, verify_certificate
from pipeline.gate.recording import write_recording
from pipeline.record.tf import quaternion
from sim.robots.urdf import rpy_matrix
from tests.pipeline.gate.conftest import ModelCopier, ProfileRun, small_gate


def read_back(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """Every message by topic, decoded by the mcap library from the schemas in the file (not by rosbags)."""
    topics: dict[str, list[tuple[int, Any]]] = {}
    with path.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for _, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True):
            topics.setdefault(channel.topic, []).append((message.log_time, decoded))
    return topics


def matrix(rotation: Any) -> np.ndarray:
    x, y, z, w = rotation.x, rotation.y, rotation.z, rotation.w
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def compose(edges: dict[str, tuple[str, np.ndarray]], root: str, link: str) -> np.ndarray:
    """The root → link transform from the TF edges (child → (parent, 4x4))."""
    transform = np.eye(4)
    while link != root:
        parent, edge = edges[link]
        transform = edge @ transform
        link = parent
    return transform


def test_the_mcap_reads_back_and_its_tf_is_pybullet_s_link_frames(profile_run: ProfileRun, tmp_path: Path) -> None:
    traces = profile_run.traces
    path = tmp_path / "episodes.mcap"
    counts = write_recording(traces, path, 10**18, "fail", None, "ab" * 32)
    topics = read_back(path)
    steps = sum(len(t.joint_position) for t in traces)
    assert {k: len(v) for k, v in topics.items()} == counts
    assert len(topics["/joint_states"]) == len(topics["/tf"]) == len(topics["/goal"]) == steps
    assert len(topics["/joint_commands"]) == sum(len(t.command) for t in traces)
    assert topics["/robot_description"][0][1].data == traces[0].arm.urdf_path.read_text()  # type: ignore[union-attr]
    markers = [json.loads(m.data) for _, m in topics["/gate/episode"]]
    assert [m["event"] for m in markers] == ["start", "end"] * len(traces)
    for marker, trace in zip(markers[::2], traces, strict=True):
        record = trace.evaluated
        assert (marker["suite"], marker["context_index"], marker["episode"], marker["seed"]) == (
            record.suite, record.context_index, record.episode, record.seed,
        )  # fmt: skip
        assert marker["success"] == record.success and marker["certificate_id"] is None
        assert abs(marker["context_deg"] - np.degrees(record.context_rad)) < 1e-9

    static = {
        t.child_frame_id: (t.header.frame_id, t.transform)
        for _, message in topics["/tf_static"]
        for t in message.transforms
    }
    tick = 0
    for trace in traces:
        arm = trace.arm
        assert arm is not None
        for step, poses in enumerate(trace.link_poses):
            _, state = topics["/joint_states"][tick]
            assert list(state.name) == list(arm.joint_names)
            assert np.array_equal(state.position, trace.joint_position[step])
            _, goal = topics["/goal"][tick]
            assert np.allclose([goal.point.x, goal.point.y, goal.point.z], arm.goal, atol=0.0)
            _, tf = topics["/tf"][tick]
            edges = {}
            for child, (parent, t) in {
                **static,
                **{t.child_frame_id: (t.header.frame_id, t.transform) for t in tf.transforms},
            }.items():
                edge = np.eye(4)
                edge[:3, :3] = matrix(t.rotation)
                edge[:3, 3] = [t.translation.x, t.translation.y, t.translation.z]
                edges[child] = (parent, edge)
            for index, link in enumerate(arm.links):
                frame = compose(edges, arm.base_link, link)
                assert np.abs(frame[:3, 3] - poses[index, :3]).max() <= 1e-6  # m
                # PyBullet's link orientations carry ~1e-6 of rounding (positions agree to 1e-7 m)
                assert np.abs(frame[:3, :3] - matrix(_Quat(*poses[index, 3:]))).max() <= 1e-5
            tick += 1


class _Quat:
    def __init__(self, x: float, y: float, z: float, w: float) -> None:
        self.x, self.y, self.z, self.w = x, y, z, w


def test_quaternions_round_trip_for_rotations_of_every_branch() -> None:
    rng = np.random.default_rng(0)
    for roll, pitch, yaw in [*rng.uniform(-np.pi, np.pi, (200, 3)), (np.pi, 0, 0), (0, np.pi, 0), (0, 0, np.pi)]:
        rotation = rpy_matrix(float(roll), float(pitch), float(yaw))
        q = quaternion(rotation)
        assert abs(np.linalg.norm(q) - 1.0) < 1e-12 and q[3] >= 0.0
        assert np.abs(matrix(_Quat(*q)) - rotation).max() < 1e-12


def test_gate_record_writes_the_signed_episodes_with_the_certificate_id(
    expert_model: Path, model_copy: ModelCopier, gate_keys: tuple[Path, Path]
) -> None:
    model = model_copy(expert_model)
    outcome = run_gate(model, small_gate(), workers=1, signing_key=gate_keys[0], record=True)
    assert outcome.report.verdict == "pass" and outcome.certificate is not None
    assert outcome.report.recording == RECORDING_FILE and outcome.report.clips == ()
    verify_certificate(model, load_contract(model), [gate_keys[1]])  # the recording is signed with the folder
    topics = read_back(model / RECORDING_FILE)
    markers = [json.loads(m.data) for _, m in topics["/gate/episode"]]
    assert markers and all(m["certificate_id"] == outcome.certificate.certificate_id for m in markers)
    assert {m["suite"] for m in markers} == {"train", "test"} and all(m["reproduced"] for m in markers)
    assert RECORDING_FILE in (model / REPORT_MD).read_text()
    assert [t.child_frame_id for t in topics["/tf"][0][1].transforms] == ["upper_arm", "forearm"]
