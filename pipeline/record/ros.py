"""Record a ROS 2 run over DDS into a :class:`~pipeline.record.bag.RobotBag`, as ``ros2 bag record`` would.

:class:`TopicRecorder` subscribes to the robot's topics with raw (serialized) subscriptions, so each
message is written exactly as it came over the wire (its CDR bytes), logged at its receive time.
From each ``JointState`` it adds the ``/tf`` tree of the arm (stamped like the JointState), and it
notes when a new goal first arrives, so that episode markers can be placed afterwards.

Runs in the ROS environment (``.venv-ros``); ``symgate serve --sim --record`` starts it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from pipeline.record.bag import FLOAT64_ARRAY, JOINT_STATE, POINT_STAMPED, RobotBag
from pipeline.serve import wait_until
from sim.robot import DEFAULT_URDF
from sim.robots.profile import load_profile

#: The episode markers of a rehearsal (``std_msgs/String``, JSON).
EPISODE_TOPIC = "/serve/episode"


class TopicRecorder(Node):
    """Raw subscriptions to ``topics`` (name → (message class, ROS type name)) into ``bag``.

    Args:
        bag: Where the messages go (written by the caller once the run is over).
        topics: The topics to record: name → (rclpy message class, e.g. ``"sensor_msgs/msg/JointState"``).
    """

    def __init__(self, bag: RobotBag, topics: Mapping[str, tuple[Any, str]]) -> None:
        super().__init__("symgate_recorder")
        self.bag = bag
        self.lock = threading.Lock()
        self.goal_changes: list[int] = []  # receive times (ns) of each new goal
        self._goal: tuple[float, float, float] | None = None
        self._last_message = time.monotonic()
        self.recorded_topics = tuple(topics)
        for topic, (message_class, msgtype) in topics.items():
            self.create_subscription(
                message_class, topic, lambda data, t=topic, m=msgtype: self._on_message(t, m, data), 1000, raw=True
            )

    def _on_message(self, topic: str, msgtype: str, data: bytes) -> None:
        received = time.time_ns()
        self._last_message = time.monotonic()
        with self.lock:
            self.bag.raw(received, topic, msgtype, data)
            if msgtype == JOINT_STATE:
                state = self.bag.decode(data, JOINT_STATE)
                stamp = state.header.stamp.sec * 1_000_000_000 + state.header.stamp.nanosec
                self.bag.tf(received, dict(zip(state.name, state.position.tolist(), strict=True)), stamp)
            elif msgtype == POINT_STAMPED:
                point = self.bag.decode(data, POINT_STAMPED).point
                goal = (point.x, point.y, point.z)
                if goal != self._goal:
                    self._goal = goal
                    self.goal_changes.append(received)

    def wait_for_publishers(self, timeout_s: float = 15.0) -> bool:
        """Wait until DDS discovery has matched every recorded topic with a publisher.

        A subscription created early still records nothing until discovery links it to the publisher,
        which can take seconds on a loaded machine; call this before the robot starts moving. Returns
        False if some topic still had no publisher after ``timeout_s``.
        """
        return wait_until(lambda: all(self.count_publishers(topic) > 0 for topic in self.recorded_topics), timeout_s)

    def wait_until_idle(self, quiet_s: float = 0.25, timeout_s: float = 30.0) -> bool:
        """Wait until no message has been handled for ``quiet_s``: the backlog its subscriptions queued is recorded.

        The callbacks (a TF tree per JointState) can fall behind the robot; call this once the robot has
        stopped publishing, while the node still spins. Returns False if it was still busy after ``timeout_s``.
        """
        return wait_until(lambda: time.monotonic() - self._last_message >= quiet_s, timeout_s)

    def write(self, path: Path, episodes: Sequence[Mapping[str, Any]], certificate_id: str | None) -> dict[str, int]:
        """Add a marker at each episode's first goal (its outcome and the served certificate), then write the MCAP.

        Args:
            path: The MCAP file.
            episodes: The simulated robot's episode outcomes, in order.
            certificate_id: The certificate the policy node served (its diagnostics), if any.

        Returns:
            Message count per topic.
        """
        with self.lock:
            for index, (start, episode) in enumerate(zip(self.goal_changes, episodes, strict=False)):
                self.bag.marker(start, EPISODE_TOPIC, {"episode": index, **episode, "certificate_id": certificate_id})
            return self.bag.write(path)


def recorder_for(robot: str, topics: Mapping[str, str]) -> TopicRecorder:
    """A recorder for the served robot: its profile's URDF (``robot`` empty: the reacher's) and its topics.

    Args:
        robot: The profile's path or name, or "" for the paper's reacher.
        topics: The ``joint_states``, ``goal`` and ``commands`` topics the closed loop runs on.
    """
    if not robot:
        bag = RobotBag(DEFAULT_URDF)
    else:
        profile = load_profile(robot)
        bag = RobotBag(profile.urdf_path, profile.profile.held_joints, profile.profile.base_link)
    names = (topics["joint_states"], topics["goal"], topics["commands"])
    bag.robot_description(time.time_ns())
    types = ((JointState, JOINT_STATE), (PointStamped, POINT_STAMPED), (Float64MultiArray, FLOAT64_ARRAY))
    return TopicRecorder(bag, dict(zip(names, types, strict=True)))
