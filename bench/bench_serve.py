"""Observation → command latency of the policy server over real DDS, at 100 Hz and 500 Hz (both tick sources).

This process publishes ``JointState`` at the control rate (and the goal at 10 Hz); the policy
server, in its own process, runs the exported model each tick and publishes the command plus a
trace carrying the stamp of the ``JointState`` it used. Latency = receipt of that trace in this
process − the ``JointState`` stamp, so it includes waiting for the next tick (up to one period),
inference, and two DDS hops. Missed ticks = 1 − commands received / (rate × duration); the node's
CPU use comes from ``/proc/<pid>/stat``. The reference is a bare rclpy relay node in its own process
that republishes each ``JointState`` as a command at once: the floor any Python ROS 2 node pays.

Needs rclpy: run from the main venv, it re-runs itself in ``.venv-ros`` inside a loopback-only
network namespace (as root), like ``symgate serve``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

DURATION_S = 10.0
REPO = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def relay_main() -> None:
    """The reference node: JointState in → Float64MultiArray + trace out, nothing in between."""
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, Header

    rclpy.init()
    node = Node("policy_server")
    commands = node.create_publisher(Float64MultiArray, "/joint_commands", 10)
    trace = node.create_publisher(Header, "/policy_server/command_trace", 10)

    def relay(message: JointState) -> None:
        commands.publish(Float64MultiArray(data=list(message.effort)))
        trace.publish(Header(stamp=message.header.stamp))

    node.create_subscription(JointState, "/joint_states", relay, 10)
    rclpy.spin(node)


def measure(command: list[str], rate_hz: int) -> dict[str, float]:
    """Start a server process, feed it at ``rate_hz`` for DURATION_S, return latency, misses and CPU."""
    from geometry_msgs.msg import Point, PointStamped
    from lifecycle_msgs.msg import Transition
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Header

    from pipeline.serve.launch import LifecycleClient, spinning

    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    node = LifecycleClient()  # drives the server's lifecycle, records its command trace, and is the sensor
    joint_states = node.create_publisher(JointState, "/joint_states", 10)
    goal = node.create_publisher(PointStamped, "/goal", 10)
    stop = threading.Event()

    def sensor() -> None:
        period, deadline, ticks = 1.0 / rate_hz, time.monotonic(), 0
        while not stop.is_set():
            stamp = node.get_clock().now().to_msg()
            joint_states.publish(
                JointState(
                    header=Header(stamp=stamp),
                    name=["elbow", "shoulder"],
                    position=[0.3, 2.0],
                    velocity=[0.0, 0.0],
                    effort=[0.0, 0.0],
                )
            )
            if ticks % max(1, rate_hz // 10) == 0:  # goals change rarely: 10 Hz
                goal.publish(PointStamped(header=Header(stamp=stamp), point=Point(x=0.7, y=0.0)))
            ticks += 1
            deadline += period
            time.sleep(max(0.0, deadline - time.monotonic()))

    with spinning(node):
        feeder = threading.Thread(target=sensor, daemon=True)
        feeder.start()
        try:
            if "symgate_ros.policy_server" in command:
                assert node.transition(Transition.TRANSITION_CONFIGURE), "configure refused"
                assert node.transition(Transition.TRANSITION_ACTIVATE), "activate refused"
            time.sleep(2.0)  # warm-up, discovery
            node.trace_latency_s.clear()
            cpu0, wall0 = cpu_seconds(process.pid), time.monotonic()
            time.sleep(DURATION_S)
            cpu1, wall1 = cpu_seconds(process.pid), time.monotonic()
            latencies = np.asarray(node.trace_latency_s[:]) * 1e3
        finally:
            stop.set()
            feeder.join()
            process.terminate()
            process.wait(timeout=10)
    node.destroy_node()
    expected = rate_hz * (wall1 - wall0)
    return {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "max_ms": float(latencies.max()),
        "missed_tick_rate": max(0.0, 1.0 - len(latencies) / expected),
        "cpu_percent": 100.0 * (cpu1 - cpu0) / (wall1 - wall0),
    }


def ros_main() -> None:
    import rclpy

    sys.path.insert(0, str(REPO / "bench"))
    from common import exported_model, write_result

    work = Path(tempfile.mkdtemp(prefix="symgate-bench-serve-"))
    rclpy.init()
    rows: list[dict[str, Any]] = []
    samples: dict[str, list[float]] = {}
    try:
        model = exported_model(work)
        # (rate, tick source): the fixed-rate timer at both rates, and ticks on JointState arrival at 500 Hz.
        for rate, tick in ((100, "timer"), (500, "timer"), (500, "joint_state")):
            server = [sys.executable, "-m", "symgate_ros.policy_server"]
            server += ["--ros-args", "-r", "__node:=policy_server", "-p", f"model_dir:={model}"]
            server += ["-p", "allow_uncertified:=true", "-p", "publish_trace:=true", "-p", f"control_hz:={rate}.0"]
            server += ["-p", "joint_state_max_age_s:=0.1", "-p", "max_torque_rate:=0.0", "-p", f"tick_source:={tick}"]
            ours = measure(server, rate)
            reference = measure([sys.executable, __file__, "--relay"], rate)
            for name, measured in (("policy_server", ours), ("relay", reference)):
                samples[f"{name}_{rate}hz_{tick}"] = [measured[k] for k in sorted(measured)]  # keys in sorted order
            for key, target in (("p50_ms", ""), ("p99_ms", "<= 2 ms at 500 Hz"), ("max_ms", "")):
                rows.append(
                    {
                        "metric": f"JointState → command latency over DDS at {rate} Hz, {tick} ticks, {key[:-3]} (ms)",
                        "symgate": ours[key],
                        "reference": reference[key],
                        "reference_name": "bare rclpy relay node (no model, no tick wait)",
                        "ratio": reference[key] / ours[key],
                        "target": target if rate == 500 else "",
                    }
                )
            rows.append(
                {
                    "metric": f"missed ticks at {rate} Hz, {tick} (ratio: delivered), CPU {ours['cpu_percent']:.0f} %",
                    "symgate": ours["missed_tick_rate"],
                    "reference": reference["missed_tick_rate"],
                    "reference_name": f"bare rclpy relay node (CPU {reference['cpu_percent']:.0f} %)",
                    "ratio": (1.0 - ours["missed_tick_rate"]) / max(1e-9, 1.0 - reference["missed_tick_rate"]),
                    "target": "< 0.01 at 500 Hz" if rate == 500 else "",
                }
            )
    finally:
        rclpy.try_shutdown()
        shutil.rmtree(work, ignore_errors=True)
    write_result("serve", rows, samples)


def main() -> None:
    if "--relay" in sys.argv:
        relay_main()
    elif importlib.util.find_spec("rclpy") is not None:
        ros_main()
    else:  # from the main venv: the ROS venv, in a private network namespace
        sys.path.insert(0, str(REPO))
        from pipeline.serve import in_ros_environment

        command, env, _ = in_ros_environment([__file__], domain_id="51")
        subprocess.run(command, env=env, check=True)


if __name__ == "__main__":
    main()
