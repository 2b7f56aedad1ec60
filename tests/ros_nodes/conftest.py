"""ROS 2 test fixtures: a loopback-only network check, real certified model folders, a harness node.

These tests run in ``.venv-ros`` inside a private network namespace (``make ros-test``): DDS
discovery and traffic stay on ``lo``. Outside one they refuse to run rather than touch a network.
"""

import contextlib
import faulthandler
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, Header
from std_srvs.srv import Trigger

from pipeline.export import ONNX_FILE, load_contract
from pipeline.fleet import FleetConfig, record_fleet
from pipeline.gate import GateConfig, run_gate
from pipeline.gate.signing import init_keys
from pipeline.ingest import IngestConfig, ingest
from pipeline.serve import OUTER_MOUNT_NAMESPACE, wait_until
from pipeline.serve.launch import ros_args, spinning
from pipeline.train import TrainConfig, train
from tests.policies import export_expert, replace_with_nan_graph

REPO = Path(__file__).resolve().parents[2]
#: The watchdog's max age in tests that are not about the watchdog. The harness's sensor is a Python
#: thread of a test process that may share two cores with other work: a stall of more than the node's
#: default 50 ms must not trip the watchdog there (the watchdog test sets its own max age).
RELAXED_MAX_AGE_S = 2.0
#: How long the harness waits for a service answer, a node to appear or a message to arrive. Generous,
#: so that a loaded machine cannot fail a test, and bounded, so that a broken node cannot hang the run:
#: every wait returns as soon as its condition holds. No timing requirement of the node is tested with
#: these waits; the node measures those on its own clock (see its diagnostics).
HARNESS_TIMEOUT_S = 60.0
#: A test (set-up and teardown included) that runs longer than this is hung, not slow: every thread's
#: stack goes to stderr and the run ends with an error, instead of hanging CI until its time limit.
TEST_DEADLINE_S = 600.0


def pytest_configure(config: pytest.Config) -> None:
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]  # per network namespace, unlike /sys/class/net
    interfaces = sorted(line.split(":")[0].strip() for line in lines)
    outer = os.environ.get(OUTER_MOUNT_NAMESPACE)
    foreign = sorted(p.name for p in Path("/dev/shm").glob("fastrtps_*"))  # Fast DDS shared-memory segments
    if interfaces != ["lo"] or os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        why = f"a loopback-only network namespace (interfaces: {interfaces}), ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST"
    elif outer is None or outer == str(Path("/proc/self/ns/mnt").readlink()):
        why = "a private mount namespace with its own /dev/shm (a network namespace shares the host's /dev/shm)"
    elif foreign:
        why = f"a /dev/shm of their own, but other DDS participants' segments are there: {foreign[:3]}"
    else:
        return
    pytest.exit(f"ROS tests need {why}: run them with `make ros-test`", returncode=2)


GATE = GateConfig.model_validate(
    {
        "env": {"contexts": {"train_deg": [0.0], "test_count": 10}},
        "suites": [
            {"name": "train", "contexts": "train", "episodes_per_context": 5},
            {"name": "test", "contexts": "test", "min_success": 0.9},
        ],
        "bootstrap_resamples": 200,
    }
)


@dataclass(frozen=True)
class Models:
    """Model folders: two different certified (signed) experts, an uncertified one, a tampered one, a NaN one.

    ``signing_key`` signed the certified ones; ``trusted_key`` is its public key, which
    ``start_server`` gives the node as ``trusted_keys`` unless a test passes its own.
    """

    certified: Path
    certified_other: Path
    uncertified: Path
    tampered: Path
    nan_output: Path
    signing_key: Path
    trusted_key: Path


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("ros-models")
    os.environ["MINARI_DATASETS_PATH"] = str(root / "datasets")
    record_fleet(
        FleetConfig.model_validate({"robots": 1, "episodes": 2, "recipe": "expert"}), root / "fleet", workers=1
    )
    ingest([root / "fleet"], IngestConfig(), "symgate/ros-test-v0", workers=1)
    config = TrainConfig.model_validate(
        {
            "algorithm": "bc",
            "steps": 20,
            "hidden": (32, 32),
            "log_every": 20,
            "checkpoint_every": 20,
            "metric_states": 32,
            "augmentation": {"strategy": "none", "spec": str(REPO / "deploy/symmetry/reacher.yaml")},
        }
    )
    train(config, "symgate/ros-test-v0", root / "run")
    from pipeline.export.export import export_run

    trained = export_run(root / "run", root / "trained")
    export_expert(trained, root / "certified")
    export_expert(trained.model_copy(update={"seed": 1}), root / "certified_other")  # other bytes, same robot
    signing_key, trusted_key = init_keys(root / "keys")
    for name in ("certified", "certified_other"):
        assert run_gate(root / name, GATE, workers=1, signing_key=signing_key).report.verdict == "pass"
    shutil.copytree(root / "certified", root / "uncertified")
    (root / "uncertified" / "certificate.json").unlink()
    (root / "uncertified" / "model.sig").unlink()
    shutil.copytree(root / "certified", root / "tampered")
    data = bytearray((root / "tampered" / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / "tampered" / ONNX_FILE).write_bytes(bytes(data))
    shutil.copytree(root / "uncertified", root / "nan_output")
    replace_with_nan_graph(root / "nan_output")
    assert load_contract(root / "certified") != load_contract(root / "certified_other")
    certified, other, uncertified, tampered, nan_output = (
        root / name for name in ("certified", "certified_other", "uncertified", "tampered", "nan_output")
    )
    return Models(certified, other, uncertified, tampered, nan_output, signing_key, trusted_key)


@pytest.fixture(autouse=True)
def hang_deadline() -> Iterator[None]:
    """End the run with every thread's stack if this test (and its teardown) passes ``TEST_DEADLINE_S``.

    Autouse, so it is set up before and torn down after every other function fixture of the test.
    """
    faulthandler.dump_traceback_later(TEST_DEADLINE_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def ros() -> Iterator[None]:
    rclpy.init()
    yield
    rclpy.try_shutdown()


class Harness(Node):
    """The robot's side of the policy server in the test process: sensors in, commands and diagnostics out."""

    def __init__(self, server: str = "policy_server") -> None:
        super().__init__("test_harness")
        self.server = server
        self.joint_states = self.create_publisher(JointState, "/joint_states", 10)
        self.goal = self.create_publisher(PointStamped, "/goal", 10)
        self.estop = self.create_publisher(Bool, "/estop", 10)
        self.commands: list[tuple[float, list[float]]] = []
        self.traces: list[float] = []  # the JointState stamp each policy command used (publish_trace)
        self.statuses: list[Any] = []
        self.create_subscription(Float64MultiArray, "/joint_commands", self._on_command, 100)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.create_subscription(Header, f"/{server}/command_trace", self._on_trace, 100)
        self._change = self.create_client(ChangeState, f"/{server}/change_state")
        self._get = self.create_client(GetState, f"/{server}/get_state")
        self._set = self.create_client(SetParameters, f"/{server}/set_parameters")
        self._reset = self.create_client(Trigger, f"/{server}/reset_estop")
        self._swap = self.create_client(Trigger, f"/{server}/swap_model")
        self._lock = threading.Lock()

    def _on_command(self, message: Float64MultiArray) -> None:
        with self._lock:
            self.commands.append((time.monotonic(), list(message.data)))

    def _on_trace(self, message: Header) -> None:
        with self._lock:
            self.traces.append(message.stamp.sec + message.stamp.nanosec * 1e-9)

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        with self._lock:
            self.statuses += [s for s in message.status if s.name.startswith(f"{self.server}:")]

    def publish_state(
        self, position: list[float], velocity: list[float], names: tuple[str, ...] = ("elbow", "shoulder")
    ) -> float:
        """Publish a JointState with joints in ``names`` order (values given in that order); returns its stamp."""
        stamp = self.get_clock().now().to_msg()
        self.joint_states.publish(
            JointState(header=Header(stamp=stamp), name=list(names), position=position, velocity=velocity)
        )
        return float(stamp.sec + stamp.nanosec * 1e-9)

    def publish_goal(self, x: float, y: float) -> None:
        self.goal.publish(PointStamped(point=Point(x=x, y=y)))

    def call(self, client: Any, request: Any, timeout_s: float = HARNESS_TIMEOUT_S) -> Any:
        assert client.wait_for_service(timeout_sec=timeout_s), f"{client.srv_name} never appeared"
        future = client.call_async(request)
        assert self.wait_for(future.done, timeout_s), f"{client.srv_name} did not answer"
        return future.result()

    def wait_until_answered(self, timeout_s: float = HARNESS_TIMEOUT_S) -> None:
        """Block until the server's ``get_state`` answers, asking again every 2 s.

        A service counts as available once its request topic has matched, but Fast DDS drops a response
        whose reply topic has not matched the client yet (the server logs "failed to send response
        (timeout)"), so a first transition right after start-up could go unanswered (seen once in a CI
        run). The server's endpoints are discovered together, so once ``get_state`` (which changes
        nothing) answers, ``change_state``'s replies come through too.
        """
        deadline = time.monotonic() + timeout_s
        assert self._get.wait_for_service(timeout_sec=timeout_s), f"{self._get.srv_name} never appeared"
        while not self.wait_for(self._get.call_async(GetState.Request()).done, 2.0):
            assert time.monotonic() < deadline, f"{self._get.srv_name} never answered"

    def transition(self, transition_id: int) -> bool:
        return bool(self.call(self._change, ChangeState.Request(transition=Transition(id=transition_id))).success)

    def state(self) -> int:
        return int(self.call(self._get, GetState.Request()).current_state.id)

    def set_model_dir(self, path: Path) -> None:
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(path))
        result = self.call(self._set, SetParameters.Request(parameters=[Parameter(name="model_dir", value=value)]))
        assert result.results[0].successful

    def reset_estop(self) -> Trigger.Response:
        return self.call(self._reset, Trigger.Request())

    def swap(self) -> Trigger.Response:
        return self.call(self._swap, Trigger.Request())

    def commands_since(self, since: float) -> list[tuple[float, list[float]]]:
        with self._lock:
            return [c for c in self.commands if c[0] >= since]

    def latest_status(self) -> Any:
        with self._lock:
            return self.statuses[-1] if self.statuses else None

    def wait_for(self, condition: Callable[[], bool], timeout_s: float = HARNESS_TIMEOUT_S) -> bool:
        return wait_until(condition, timeout_s, poll_s=0.005)


class Sensor:
    """Publishes the harness's JointState (joints ``names``, elbow first by default) and goal at a fixed rate."""

    def __init__(self, harness: Harness, hz: float = 100.0) -> None:
        self.harness, self.period = harness, 1.0 / hz
        self.position, self.velocity, self.goal = [0.3, 2.0], [0.0, 0.0], (0.7, 0.0)
        self.names: tuple[str, ...] = ("elbow", "shoulder")
        self.stamps: list[float] = []  # of every JointState published
        self.running, self.stopped = threading.Event(), threading.Event()
        self.running.set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(self.period):
            if self.running.is_set():
                count = len(self.names)
                self.stamps.append(self.harness.publish_state(self.position[:count], self.velocity[:count], self.names))
                self.harness.publish_goal(*self.goal)

    def stop(self) -> None:
        self.stopped.set()
        self._thread.join()


@dataclass
class Server:
    """A policy_server process, the harness talking to it, and a sensor feeding it."""

    process: subprocess.Popen[bytes]
    log: Path
    harness: Harness
    sensor: Sensor

    def log_text(self) -> str:
        """What the node has logged so far (rclpy logs to stderr)."""
        return self.log.read_text(errors="replace")


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``: no node outlives its test."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def start_server(ros: None, models: Models, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start ``policy_server`` in its own process with the given parameters (``trusted_keys``: the test key).

    Teardown stops every process, sensor, executor thread and harness even when one of them fails, so that a
    failed test cannot leave a node or a publisher running into the next one.
    """
    numbers = itertools.count()
    with contextlib.ExitStack() as stack:

        def start(remaps: tuple[str, ...] = (), **parameters: Any) -> Server:
            parameters.setdefault("joint_state_max_age_s", RELAXED_MAX_AGE_S)
            parameters.setdefault("trusted_keys", [str(models.trusted_key)])
            command = [sys.executable, "-m", "symgate_ros.policy_server", *ros_args("policy_server", parameters)]
            for remap in remaps:  # ``from:=to`` remapping rules on the command line
                command += ["-r", remap]
            log = tmp_path / f"policy_server-{next(numbers)}.log"
            with log.open("wb") as stderr:
                process = subprocess.Popen(command, stderr=stderr)
            stack.callback(stop_process, process)
            harness = Harness()
            stack.callback(harness.destroy_node)
            stack.enter_context(spinning(harness))
            harness.wait_until_answered()
            sensor = Sensor(harness)
            stack.callback(sensor.stop)
            return Server(process, log, harness, sensor)

        yield start
