"""``sim_robot``: any simulated arm as a ROS 2 robot, for sim-to-robot rehearsal.

It simulates the robot profile named by ``robot`` (a name under ``deploy/robots/`` or a
``robot.yaml`` path; empty: the paper's Rotational Reacher env) and behaves like that arm's
ros2_control driver: every control period it applies the latest command
(``std_msgs/Float64MultiArray`` in the profile's joint order, on the profile's controller command
topic: joint torques, velocity or position targets as its action interface says; the idle command,
i.e. zero torque, zero velocity or hold position, if none came within ``command_timeout_s``) and
advances the physics one control period; at the sensor rate it publishes ``sensor_msgs/JointState``
(the physics state at that instant, joints listed in ``joint_order``, which differs from the
model's on purpose) and the goal (``geometry_msgs/PointStamped`` in the base frame). Rates, joints,
contexts and topics come from the profile. It runs one episode per context of a context set, waits
for the first command before starting, and when done writes the outcome of every episode to
``result_file`` (JSON) and exits. ``speedup`` runs the simulation faster than real time (the policy
server's rate must be scaled alike).

Runs in the ROS environment (``.venv-ros``); needs rclpy and symgate's ``sim``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import Point, PointStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header

from pipeline.io import atomic_write_json
from sim.contexts import wrap_angle
from sim.robots.interface import PhysicsSample, simulated_arm
from sim.robots.profile import load_profile

#: Topics of the paper's reacher env (``robot`` empty), which has no profile.
REACHER_TOPICS = {"joint_states": "/joint_states", "goal": "/goal", "commands": "/joint_commands"}

PARAMETERS: dict[str, tuple[Any, str]] = {
    "robot": ("", "Robot profile to simulate (name or robot.yaml path); empty: the paper's Rotational Reacher."),
    "context_set": ("test", "Context set of the env config to run: train, test or validation."),
    "count": (10, "Run the first this many contexts of the set (0 = all)."),
    "speedup": (1.0, "Simulated time per wall-clock time (> 1: faster than real time)."),
    "sensor_hz": (0.0, "JointState rate: a multiple of the control rate dividing the physics rate; 0 = physics rate."),
    "seed": (0, "Reset seed of episode 0; episode i uses seed + i."),
    "joint_order": ([""], "Order of the joints in JointState messages; empty: the robot's joints reversed."),
    "command_timeout_s": (0.0, "Idle command when the latest is older than this (simulated s); 0 = 5 control periods."),
    "result_file": ("", "JSON file the episode outcomes are written to when done."),
    "joint_states_topic": ("", "sensor_msgs/JointState out; empty: the profile's."),
    "goal_topic": ("", "geometry_msgs/PointStamped out; empty: the profile's."),
    "commands_topic": ("", "std_msgs/Float64MultiArray commands in; empty: the profile's controller command topic."),
}


def robot_topics(robot: str) -> dict[str, str]:
    """The JointState, goal and command topics of a robot profile (``robot`` empty: the paper reacher's).

    The command topic is the profile's ``ros.controller_commands``: the one its ros2_control
    controller listens on and the policy node writes.
    """
    if not robot:
        return dict(REACHER_TOPICS)
    topics = load_profile(robot).profile.ros
    return {"joint_states": topics.joint_states, "goal": topics.goal, "commands": topics.controller_commands}


class SimRobot(Node):
    """A simulated arm behind ROS topics; see the module docstring."""

    def __init__(self) -> None:
        super().__init__("sim_robot")
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        robot = str(self.get_parameter("robot").value)
        self.env = simulated_arm(robot or None)
        self.joints = list(self.env.joint_names)
        order = [name for name in self.get_parameter("joint_order").value if name] or self.joints[::-1]
        if sorted(order) != sorted(self.joints):
            raise ValueError(f"joint_order {order} must list the robot's joints {self.joints}")
        self.order = [self.joints.index(j) for j in order]
        self.names = order
        count = int(self.get_parameter("count").value)
        angles = self.env.contexts.angles(self.get_parameter("context_set").value)
        self.contexts = angles[:count] if count else angles
        self.seed = int(self.get_parameter("seed").value)
        self.speedup = float(self.get_parameter("speedup").value)
        control_hz, physics_hz = self.env.control_hz, self.env.physics_hz
        timeout_s = float(self.get_parameter("command_timeout_s").value) or 5.0 / control_hz
        self.timeout_s = timeout_s / self.speedup
        sensor_hz = float(self.get_parameter("sensor_hz").value) or float(physics_hz)
        per_control, per_physics = sensor_hz / control_hz, physics_hz / sensor_hz
        if not (per_control.is_integer() and per_physics.is_integer()):
            raise ValueError(
                f"sensor_hz={sensor_hz:g} must be a multiple of control_hz={control_hz} "
                f"and divide physics_hz={physics_hz}"
            )
        self.per_control, self.per_physics = int(per_control), int(per_physics)
        self.samples: list[PhysicsSample] = []  # this control period's physics steps
        self.env.add_physics_listener(self.samples.append)
        self.wrap = list(self.env.joint_continuous)
        self.publish_effort = self.env.action_interface == "effort"  # a torque command is the joint's effort
        self.frame = self.env.base_frame
        self.sensor_ticks = 0
        self.episodes: list[dict[str, Any]] = []
        self.command_time: float | None = None
        self.bad_commands = 0
        self.started = False
        self.done = False
        self._reset()
        self.command = self.env.idle_command()
        topics = robot_topics(robot)
        topic = {key: str(self.get_parameter(f"{key}_topic").value) or value for key, value in topics.items()}
        self.joint_states = self.create_publisher(JointState, topic["joint_states"], 10)
        self.goal = self.create_publisher(PointStamped, topic["goal"], 10)
        self.create_subscription(Float64MultiArray, topic["commands"], self._on_command, 10)
        self.create_timer(1.0 / (sensor_hz * self.speedup), self._tick)
        self.get_logger().info(
            f"simulating {robot or 'the Rotational Reacher'} ({len(self.joints)} joints, {self.env.action_interface} "
            f"commands on {topic['commands']}, {control_hz} Hz control, {sensor_hz:g} Hz JointState)"
        )

    def _reset(self) -> None:
        index = len(self.episodes)
        self.env.reset(seed=self.seed + index, options={"context": float(self.contexts[index])})
        self.samples.clear()
        self.steps = 0

    def _on_command(self, message: Float64MultiArray) -> None:
        data = np.asarray(message.data, dtype=np.float64)
        if data.shape != (len(self.joints),) or not np.isfinite(data).all():
            self.bad_commands += 1
            return
        self.command, self.command_time = data, time.monotonic()
        self.started = True

    def _tick(self) -> None:
        """One sensor period: a control step at every ``per_control``-th tick, then publish the state."""
        if self.done:
            return
        if self.started and self.sensor_ticks % self.per_control == 0 and self._control_step():
            return
        phase = self.sensor_ticks % self.per_control
        sample = self.samples[(phase + 1) * self.per_physics - 1] if self.samples else self.env.joint_state()
        self._publish(sample)
        if self.started:
            self.sensor_ticks += 1

    def _control_step(self) -> bool:
        """Apply the latest command for one control period; returns True when the last episode ended."""
        fresh = self.command_time is not None and time.monotonic() - self.command_time <= self.timeout_s
        self.samples.clear()
        _, _, terminated, truncated, info = self.env.step(self.command if fresh else self.env.idle_command())
        self.steps += 1
        if not (terminated or truncated):
            return False
        self.episodes.append(
            {
                "context_deg": math.degrees(float(self.contexts[len(self.episodes)])),
                "success": bool(terminated),
                "steps": self.steps,
                "distance_m": float(info["distance"]),
            }
        )
        self.get_logger().info(
            f"episode {len(self.episodes)}/{len(self.contexts)}: "
            f"{'reached' if terminated else 'timed out'} after {self.steps} steps"
        )
        if len(self.episodes) == len(self.contexts):
            self._finish()
            return True
        self._reset()
        self.sensor_ticks = 0
        return False

    def _publish(self, sample: PhysicsSample) -> None:
        stamp = self.get_clock().now().to_msg()
        position = [
            float(wrap_angle(q)) if wrap else float(q) for q, wrap in zip(sample.joint_position, self.wrap, strict=True)
        ]
        velocity = [float(v) for v in sample.joint_velocity]
        effort = [float(self.command[i]) for i in self.order] if self.publish_effort else []
        self.joint_states.publish(
            JointState(
                header=Header(stamp=stamp, frame_id=self.frame),
                name=self.names,
                position=[position[i] for i in self.order],
                velocity=[velocity[i] for i in self.order],
                effort=effort,
            )
        )
        x, y, *z = (float(v) for v in self.env.goal_position)
        self.goal.publish(
            PointStamped(header=Header(stamp=stamp, frame_id=self.frame), point=Point(x=x, y=y, z=z[0] if z else 0.0))
        )

    def _finish(self) -> None:
        self.done = True
        successes = sum(e["success"] for e in self.episodes)
        result = {
            "episodes": self.episodes,
            "success_rate": successes / len(self.episodes),
            "bad_commands": self.bad_commands,
            "speedup": self.speedup,
        }
        path = self.get_parameter("result_file").value
        if path:
            atomic_write_json(Path(path), result)
        self.get_logger().info(f"done: {successes}/{len(self.episodes)} episodes reached the goal")


def main(args: list[str] | None = None) -> None:
    """Console entry point: run the episodes, then exit."""
    rclpy.init(args=args)
    node = SimRobot()
    try:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.env.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
