"""The plain-Python launcher of the sim-to-robot rehearsal: ``sim_robot`` + ``policy_server`` over real DDS.

Runs in the ROS environment (``.venv-ros``; ``symgate serve --sim`` calls it there). The simulated
robot is the model contract's robot profile, or the one ``--robot`` names (the policy server then
checks the contract against that profile at configure, so a model for another robot is refused);
both nodes use the profile's topics. It starts both nodes as separate processes, drives the policy
server through its lifecycle (configure → activate) with the standard ``lifecycle_msgs`` services,
waits for the simulated robot to finish its episodes, measures the observation → command latency
from the server's command trace (``JointState`` stamp → command receipt in this process), reads the
server's diagnostics, then deactivates and shuts everything down.
``deploy/ros/policy_server.launch.py`` is the equivalent for a real ROS 2 installation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, Header

from pipeline.serve import wait_until
from pipeline.serve.sim_robot import robot_topics
from sim.robots.profile import RobotProfileError, load_profile, profile_path

SERVER = "policy_server"


def ros_args(node: str, parameters: dict[str, Any]) -> list[str]:
    """``--ros-args -r __node:=NAME -p key:=value ...`` with values written as YAML."""
    args = ["--ros-args", "-r", f"__node:={node}"]
    for key, value in parameters.items():
        args += ["-p", f"{key}:={json.dumps(value)}"]
    return args


class LifecycleClient(Node):
    """Drives a lifecycle node and watches its commands, trace and diagnostics."""

    def __init__(self, server: str = SERVER, commands_topic: str = "/joint_commands") -> None:
        super().__init__(f"{server}_supervisor")
        self.server = server
        self._change = self.create_client(ChangeState, f"/{server}/change_state")
        self.trace_latency_s: list[float] = []
        self.commands = 0
        self.diagnostics: dict[str, str] = {}
        self.create_subscription(Header, f"/{server}/command_trace", self._on_trace, 100)
        self.create_subscription(Float64MultiArray, commands_topic, self._on_command, 100)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_trace(self, message: Header) -> None:
        sent = message.stamp.sec + message.stamp.nanosec * 1e-9
        self.trace_latency_s.append(time.time() - sent)

    def _on_command(self, message: Float64MultiArray) -> None:
        self.commands += 1

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.startswith(f"{self.server}:"):
                self.diagnostics = {value.key: value.value for value in status.values}
                self.diagnostics["level"] = str(int.from_bytes(status.level, "little"))
                self.diagnostics["message"] = status.message

    def transition(self, transition_id: int, timeout_s: float = 30.0) -> bool:
        """Request a lifecycle transition; True when the node accepted it."""
        if not self._change.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"/{self.server}/change_state did not appear within {timeout_s} s")
        future = self._change.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        wait_until(future.done, timeout_s, poll_s=0.01)
        result = future.result()
        return bool(result is not None and result.success)


@contextmanager
def spinning(node: Node, period_s: float = 0.05, stop_timeout_s: float = 15.0) -> Iterator[None]:
    """Run ``node``'s callbacks on a background thread for the duration of the block.

    The thread calls ``spin_once`` until a stop flag is set, and is joined before the executor is
    shut down. rclpy 7.1.6's ``Executor.shutdown`` from another thread does not wait for ``spin`` to
    leave its wait, and destroys the guard condition that wait may still hold (ros2/rclpy#968).

    Raises:
        RuntimeError: the thread did not stop within ``stop_timeout_s``.
    """
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=period_s)

    thread = threading.Thread(target=run, name=f"spin {node.get_name()}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(stop_timeout_s)
        if thread.is_alive():
            raise RuntimeError(
                f"the executor thread of node {node.get_name()!r} did not stop within {stop_timeout_s} s"
            )
        executor.shutdown()


def rehearse(
    model_dir: Path,
    context_set: str,
    count: int,
    speedup: float,
    server_parameters: dict[str, Any] | None = None,
    timeout_s: float = 600.0,
    robot: str | None = None,
    record: Path | None = None,
) -> dict[str, Any]:
    """Run the closed loop and return the episodes, success rate, latency and diagnostics.

    Args:
        model_dir: The model folder the policy server loads.
        context_set: Context set the simulated robot runs.
        count: Episodes (the first ``count`` contexts of the set; 0 = all).
        speedup: Simulated seconds per wall-clock second (the server's rate is scaled alike).
        server_parameters: Further policy-server parameters (e.g. ``trusted_keys``).
        timeout_s: Longest wait for the simulated robot to finish, s.
        robot: Robot profile to simulate (name or path); None: the contract's (the paper's reacher
            env for a contract without one).
        record: Record the run's topics over DDS into this MCAP file (``pipeline.record.ros``).

    Raises:
        RuntimeError: The server refused to configure or activate (its log says why), or a node died.
    """
    contract = json.loads((model_dir / "contract.json").read_text(encoding="utf-8"))
    control_hz = float(contract["control_hz"]) * speedup
    robot = robot or contract.get("robot")
    profile = str(profile_path(robot).resolve()) if robot else ""  # the same file for both processes
    topics = robot_topics(profile)
    recorder = None
    if record is not None:
        from pipeline.record.ros import recorder_for

        recorder = recorder_for(profile, topics)  # subscribed before the robot starts: nothing is missed
    with tempfile.TemporaryDirectory(prefix="symgate-serve-") as scratch:
        result_file = Path(scratch) / "episodes.json"
        robot_parameters = {
            "context_set": context_set,
            "count": count,
            "speedup": speedup,
            "result_file": str(result_file),
            "robot": profile,
        }
        simulator = subprocess.Popen(
            [sys.executable, "-m", "pipeline.serve.sim_robot", *ros_args("sim_robot", robot_parameters)]
        )
        parameters = {
            "model_dir": str(model_dir),
            "control_hz": control_hz,
            "joint_state_max_age_s": 2.5 / control_hz,
            "publish_trace": True,
            "joint_states_topic": topics["joint_states"],
            "goal_topic": topics["goal"],
            "commands_topic": topics["commands"],
            **({"robot_profile": profile} if profile else {}),
            **({"safe_action": "hold"} if contract.get("action_interface") == "position" else {}),
            **(server_parameters or {}),
        }
        server = subprocess.Popen([sys.executable, "-m", "symgate_ros.policy_server", *ros_args(SERVER, parameters)])
        client = LifecycleClient(commands_topic=topics["commands"])
        try:
            with spinning(client), spinning(recorder) if recorder else nullcontext():
                if not client.transition(Transition.TRANSITION_CONFIGURE):
                    raise RuntimeError(f"{SERVER} refused to configure {model_dir} (see its log above)")
                if recorder is not None and not recorder.wait_for_publishers():  # before the arm moves
                    recorder.get_logger().warning("a recorded topic has no publisher yet: its recording starts late")
                if not client.transition(Transition.TRANSITION_ACTIVATE):
                    raise RuntimeError(f"{SERVER} refused to activate")
                started = time.monotonic()
                while simulator.poll() is None and time.monotonic() - started < timeout_s:
                    if server.poll() is not None:
                        raise RuntimeError(f"{SERVER} exited with code {server.returncode}")
                    time.sleep(0.05)
                wall = time.monotonic() - started
                diagnostics = dict(client.diagnostics)  # the last report while the robot was running
                client.transition(Transition.TRANSITION_DEACTIVATE)
                client.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
                if recorder is not None and not recorder.wait_until_idle():
                    recorder.get_logger().warning(
                        "the recorder was still busy 30 s after the robot stopped: its recording is cut short"
                    )
            if simulator.returncode != 0 or not result_file.exists():
                raise RuntimeError(f"sim_robot did not finish (exit code {simulator.returncode})")
            outcome: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
            if recorder is not None and record is not None:
                recorder.write(record, outcome["episodes"], diagnostics.get("certificate_id"))
        finally:
            client.destroy_node()
            if recorder is not None:
                recorder.destroy_node()
            for process in (simulator, server):
                if process.poll() is None:
                    process.terminate()
                    process.wait(timeout=10)
    latency_ms = np.asarray(client.trace_latency_s) * 1e3
    outcome.update(
        {
            "robot": load_profile(profile).name if profile else None,  # None: the paper's reacher env
            "control_hz": control_hz,
            "wall_s": wall,
            "commands": client.commands,
            "obs_to_command_ms": {
                "p50": float(np.percentile(latency_ms, 50)),
                "p99": float(np.percentile(latency_ms, 99)),
                "max": float(latency_ms.max()),
            }
            if len(latency_ms)
            else None,
            "diagnostics": diagnostics,
        }
    )
    return outcome


def main() -> None:
    """``python -m pipeline.serve.launch --model DIR [--robot R] [--trusted-key PUB ...] [--contexts S] [--count N]``.

    ``--robot`` names the robot profile to simulate (default: the contract's).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="Certified model folder.")
    parser.add_argument("--contexts", default="test", help="Context set the sim robot runs: train, test, validation.")
    parser.add_argument("--count", type=int, default=10, help="Episodes (the first N contexts of the set; 0 = all).")
    parser.add_argument("--speedup", type=float, default=1.0, help="Simulated seconds per wall-clock second.")
    parser.add_argument("--out", type=Path, help="Write the outcome as JSON here.")
    parser.add_argument("--robot", help="Robot profile to simulate (name or robot.yaml path); default: the contract's.")
    parser.add_argument("--record", type=Path, help="Record the run's topics into this MCAP file.")
    parser.add_argument(
        "--trusted-key", type=Path, action="append", default=[], help="A public key the node trusts (repeatable)."
    )
    options = parser.parse_args()
    trusted = {"trusted_keys": [str(k.resolve()) for k in options.trusted_key]} if options.trusted_key else {}
    rclpy.init()
    try:
        outcome = rehearse(
            options.model.resolve(),
            options.contexts,
            options.count,
            options.speedup,
            trusted,
            robot=options.robot,
            record=options.record,
        )
    except (RuntimeError, TimeoutError, RobotProfileError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        rclpy.try_shutdown()
    text = json.dumps(outcome, indent=2)
    if options.out:
        options.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
