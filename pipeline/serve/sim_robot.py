"""``sim_robot``: the PyBullet Rotational Reacher as a ROS 2 robot, for sim-to-robot rehearsal.

It behaves like a torque-controlled arm's driver: every control period it applies the latest
``/joint_commands`` (``std_msgs/Float64MultiArray``, contract joint order; zero torque if none came
within ``command_timeout_s``) and advances the physics one control period; at the sensor rate it
publishes ``/joint_states`` (``sensor_msgs/JointState``, the physics state at that instant, joints
listed in ``joint_order``, which differs from the model's on purpose) and ``/goal``
(``geometry_msgs/PointStamped``). It runs one episode per context
of a context set, waits for the first command before starting, and when done writes the outcome
of every episode to ``result_file`` (JSON) and exits. ``speedup`` runs the simulation faster than
real time (the policy server's rate must be scaled alike).

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
from sim.config import ReacherConfig
from sim.contexts import wrap_angle
from sim.reacher import PhysicsSample, RotationalReacherEnv

PARAMETERS: dict[str, tuple[Any, str]] = {
    "context_set": ("test", "Context set of the env config to run: train, test or validation."),
    "count": (10, "Run the first this many contexts of the set (0 = all)."),
    "speedup": (1.0, "Simulated time per wall-clock time (> 1: faster than real time)."),
    "sensor_hz": (250.0, "JointState rate: a multiple of the control rate dividing the physics rate."),
    "seed": (0, "Reset seed of episode 0; episode i uses seed + i."),
    "joint_order": (["elbow", "shoulder"], "Order of the joints in JointState messages."),
    "command_timeout_s": (0.1, "Zero torque when the latest command is older than this (simulated s)."),
    "result_file": ("", "JSON file the episode outcomes are written to when done."),
    "joint_states_topic": ("/joint_states", "sensor_msgs/JointState out."),
    "goal_topic": ("/goal", "geometry_msgs/PointStamped out."),
    "commands_topic": ("/joint_commands", "std_msgs/Float64MultiArray torques in."),
}


class SimRobot(Node):
    """The reacher behind ROS topics; see the module docstring."""

    def __init__(self, config: ReacherConfig | None = None) -> None:
        super().__init__("sim_robot")
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self.env = RotationalReacherEnv(config)
        self.joints = list(self.env.robot.joint_names)
        order = list(self.get_parameter("joint_order").value)
        if sorted(order) != sorted(self.joints):
            raise ValueError(f"joint_order {order} must list the robot's joints {self.joints}")
        self.order = [self.joints.index(j) for j in order]
        self.names = order
        count = int(self.get_parameter("count").value)
        angles = self.env.config.contexts.angles(self.get_parameter("context_set").value)
        self.contexts = angles[:count] if count else angles
        self.seed = int(self.get_parameter("seed").value)
        self.speedup = float(self.get_parameter("speedup").value)
        self.timeout_s = float(self.get_parameter("command_timeout_s").value) / self.speedup
        config = self.env.config
        sensor_hz = float(self.get_parameter("sensor_hz").value)
        per_control, per_physics = sensor_hz / config.control_hz, config.physics_hz / sensor_hz
        if not (per_control.is_integer() and per_physics.is_integer()):
            raise ValueError(
                f"sensor_hz={sensor_hz:g} must be a multiple of control_hz={config.control_hz} "
                f"and divide physics_hz={config.physics_hz}"
            )
        self.per_control, self.per_physics = int(per_control), int(per_physics)
        self.samples: list[PhysicsSample] = []  # this control period's physics steps
        self.env.add_physics_listener(self.samples.append)
        self.wrap = [joint.continuous for joint in self.env.robot.joints]
        self.sensor_ticks = 0
        self.episodes: list[dict[str, Any]] = []
        self.command = np.zeros(len(self.joints))
        self.command_time: float | None = None
        self.bad_commands = 0
        self.started = False
        self.done = False
        self._reset()
        self.joint_states = self.create_publisher(JointState, self.get_parameter("joint_states_topic").value, 10)
        self.goal = self.create_publisher(PointStamped, self.get_parameter("goal_topic").value, 10)
        self.create_subscription(Float64MultiArray, self.get_parameter("commands_topic").value, self._on_command, 10)
        self.create_timer(1.0 / (sensor_hz * self.speedup), self._tick)

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
        _, _, terminated, truncated, info = self.env.step(self.command if fresh else np.zeros(len(self.joints)))
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
        self.joint_states.publish(
            JointState(
                header=Header(stamp=stamp, frame_id="base_link"),
                name=self.names,
                position=[position[i] for i in self.order],
                velocity=[velocity[i] for i in self.order],
                effort=[float(self.command[i]) for i in self.order],
            )
        )
        goal = self.env.goal_position
        self.goal.publish(
            PointStamped(header=Header(stamp=stamp, frame_id="base_link"), point=Point(x=goal[0], y=goal[1]))
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
