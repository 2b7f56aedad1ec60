"""One arm's ROS 2 messages, written as one MCAP file with rosbags (ROS 2 Jazzy types, CDR).

:class:`RobotBag` collects messages in memory (typed, or raw CDR as they came over DDS) and writes
them in log-time order to a bare ``.mcap`` file, atomically (a staging folder next to it, then a
rename). Foxglove, ``ros2 bag play`` and any MCAP reader open it. What a recording holds:

- ``/joint_states`` (``sensor_msgs/JointState``) and, from each of them, ``/tf``
  (``tf2_msgs/TFMessage``: every movable joint of the URDF) so that a 3-D panel shows the arm;
- ``/tf_static`` (the URDF's fixed joints) and ``/robot_description`` (``std_msgs/String``, the URDF
  text, for a URDF layer), once at the start;
- ``/goal`` (``geometry_msgs/PointStamped``), the commands (``std_msgs/Float64MultiArray``, joint
  order) and episode markers (``std_msgs/String``, JSON) on the topics the caller names.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from pipeline.record.tf import urdf_transforms
from sim.robots.urdf import load_urdf

JOINT_STATE = "sensor_msgs/msg/JointState"
POINT_STAMPED = "geometry_msgs/msg/PointStamped"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
STRING = "std_msgs/msg/String"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TF, TF_STATIC, ROBOT_DESCRIPTION = "/tf", "/tf_static", "/robot_description"
_NS = 1_000_000_000


class RobotBag:
    """Messages of one arm, written as one MCAP file.

    Args:
        urdf_path: The arm's URDF (TF tree and ``/robot_description``).
        held_joints: Positions of movable joints that no JointState names (held by the controller).
        frame_id: Frame of the joint states, goal and commands (default: the URDF's root link).
    """

    def __init__(self, urdf_path: Path, held_joints: Mapping[str, float] | None = None, frame_id: str | None = None):
        self.typestore = get_typestore(Stores.ROS2_JAZZY)
        self.urdf_path = urdf_path
        self.urdf = load_urdf(urdf_path)
        self.held = dict(held_joints or {})
        self.frame_id = frame_id or self.urdf.root_link
        self.messages: list[tuple[int, str, str, bytes]] = []  # (log_ns, topic, msgtype, CDR)

    # ----------------------------------------------------------------------------- messages
    def _types(self) -> Any:
        return self.typestore.types

    def _header(self, stamp_ns: int, frame_id: str | None = None) -> Any:
        time = self._types()["builtin_interfaces/msg/Time"](sec=stamp_ns // _NS, nanosec=stamp_ns % _NS)
        return self._types()["std_msgs/msg/Header"](stamp=time, frame_id=frame_id or self.frame_id)

    def _add(self, log_ns: int, topic: str, msgtype: str, message: Any) -> None:
        self.messages.append((log_ns, topic, msgtype, bytes(self.typestore.serialize_cdr(message, msgtype))))

    def raw(self, log_ns: int, topic: str, msgtype: str, data: bytes) -> None:
        """A message as it came over the wire (CDR bytes of ``msgtype``, e.g. from an rclpy raw subscription)."""
        self.messages.append((log_ns, topic, msgtype, bytes(data)))

    def decode(self, data: bytes, msgtype: str) -> Any:
        """A raw CDR message as a rosbags message object."""
        return self.typestore.deserialize_cdr(data, msgtype)

    def robot_description(self, log_ns: int) -> None:
        """``/robot_description`` (the URDF text) and ``/tf_static`` (the fixed joints), once."""
        self._add(log_ns, ROBOT_DESCRIPTION, STRING, self._types()[STRING](data=self.urdf_path.read_text()))
        self._add(log_ns, TF_STATIC, TF_MESSAGE, self._tf_message(log_ns, {}, moving=False))

    def joint_state(
        self, log_ns: int, topic: str, names: Sequence[str], position: ArrayLike, velocity: ArrayLike,
        effort: ArrayLike | None = None,
    ) -> None:  # fmt: skip
        """A ``JointState`` (joints by name) and the ``/tf`` it implies."""
        position = np.asarray(position, dtype=np.float64)
        message = self._types()[JOINT_STATE](
            header=self._header(log_ns),
            name=list(names),
            position=position,
            velocity=np.asarray(velocity, dtype=np.float64),
            effort=np.asarray(effort if effort is not None else [], dtype=np.float64),
        )
        self._add(log_ns, topic, JOINT_STATE, message)
        self.tf(log_ns, dict(zip(names, position.tolist(), strict=True)))

    def tf(self, log_ns: int, positions: Mapping[str, float], stamp_ns: int | None = None) -> None:
        """``/tf``: every movable joint of the URDF at ``positions`` (held joints at their profile values).

        Args:
            log_ns: Log time.
            positions: Joint name → position.
            stamp_ns: The transforms' header stamp (default: ``log_ns``), e.g. the JointState's.
        """
        stamp = log_ns if stamp_ns is None else stamp_ns
        self._add(log_ns, TF, TF_MESSAGE, self._tf_message(stamp, {**self.held, **positions}, moving=True))

    def _tf_message(self, stamp_ns: int, positions: Mapping[str, float], moving: bool) -> Any:
        types = self._types()
        transforms = [
            types["geometry_msgs/msg/TransformStamped"](
                header=self._header(stamp_ns, edge.parent),
                child_frame_id=edge.child,
                transform=types["geometry_msgs/msg/Transform"](
                    translation=types["geometry_msgs/msg/Vector3"](*edge.translation.tolist()),
                    rotation=types["geometry_msgs/msg/Quaternion"](*edge.rotation.tolist()),
                ),
            )
            for edge in urdf_transforms(self.urdf, positions, moving)
        ]
        return types[TF_MESSAGE](transforms=transforms)

    def goal(self, log_ns: int, topic: str, position: ArrayLike) -> None:
        """A ``PointStamped`` goal (a planar goal's z is 0)."""
        x, y, *rest = np.asarray(position, dtype=np.float64).tolist()
        point = self._types()["geometry_msgs/msg/Point"](x=x, y=y, z=rest[0] if rest else 0.0)
        self._add(log_ns, topic, POINT_STAMPED, self._types()[POINT_STAMPED](header=self._header(log_ns), point=point))

    def command(self, log_ns: int, topic: str, values: ArrayLike) -> None:
        """A ``Float64MultiArray`` command in joint order."""
        data = np.asarray(values, dtype=np.float64).reshape(-1)
        types = self._types()
        dim = types["std_msgs/msg/MultiArrayDimension"](label="joints", size=len(data), stride=len(data))
        layout = types["std_msgs/msg/MultiArrayLayout"](dim=[dim], data_offset=0)
        self._add(log_ns, topic, FLOAT64_ARRAY, types[FLOAT64_ARRAY](layout=layout, data=data))

    def marker(self, log_ns: int, topic: str, payload: Mapping[str, Any]) -> None:
        """A ``std_msgs/String`` holding ``payload`` as JSON (e.g. an episode's context, outcome and certificate)."""
        self._add(log_ns, topic, STRING, self._types()[STRING](data=json.dumps(payload, sort_keys=True)))

    # ----------------------------------------------------------------------------- file
    def write(self, path: Path) -> dict[str, int]:
        """Write every message, in log-time order, to the MCAP file ``path`` (replacing it atomically).

        Returns:
            Message count per topic.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        counts: dict[str, int] = {}
        try:
            bag = staging / "bag"
            with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
                connections = {}
                for topic, msgtype in dict.fromkeys((topic, msgtype) for _, topic, msgtype, _ in self.messages):
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=self.typestore)
                for log_ns, topic, _, data in sorted(self.messages, key=lambda item: item[0]):
                    writer.write(connections[topic], log_ns, data)
                    counts[topic] = counts.get(topic, 0) + 1
            (mcap,) = bag.glob("*.mcap")
            mcap.chmod(0o644)
            mcap.replace(path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return counts
