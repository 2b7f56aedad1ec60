"""``policy_server``: an rclpy lifecycle node that serves a gate-certified symgate ONNX policy.

Lifecycle contract (``ros2 lifecycle set /policy_server <transition>``):

- **configure**: load ``model_dir``: ``model.sig`` must be an OpenSSF model-signing signature by
  one of ``trusted_keys`` over the folder's files, ``policy.onnx``'s sha256 must match
  ``contract.json``, and the gate's ``certificate.json`` must bind the ONNX file, the contract,
  ``gate_report.json`` and the gate config in it (refused otherwise, with the reason, unless
  ``allow_uncertified``, which is logged). ``trusted_keys`` is read at every verification, so
  removing a key (rotation) refuses its signatures from the next configure, swap or reset on.
  Create the ONNX Runtime session (CUDA provider if installed, else CPU with one intra-op thread).
  Subscribe to the joint states, goal and e-stop topics and wait up to ``joint_state_timeout_s``
  for the first ``JointState``: every contract joint must be in it (mapped **by name**, any
  order), or configure fails naming the missing joints. Start ``/diagnostics`` at 1 Hz. The joint
  state and goal subscriptions live on a hidden helper node, ``_<name>_sensors``, spun by an executor
  thread of their own (:class:`SensorThread`), so that they keep flowing while a service (a model
  swap) runs; the e-stop stays on this node's executor, serialised with ``~/reset_estop``.
- **activate**: start the control loop at the contract's control rate (or ``control_hz``); with
  ``tick_source: joint_state`` it ticks on each new ``JointState`` instead (lowest latency).
  Each tick assembles the graph's one ``observation`` input, component by component and by name,
  from the latest ``JointState`` and ``PointStamped`` goal, runs the model, clamps to the
  contract's torque limits, limits the change per tick (``max_torque_rate``) and publishes
  ``Float64MultiArray`` torques in contract joint order (ros2_control's JointGroupEffortController
  format).
  Inner loop (``policy_hz`` > 0): the loop still ticks at the control rate (e.g. the sensor's
  500 Hz), but the model runs only every ``round(control_hz / policy_hz)``-th tick (e.g. at the
  contract's 50 Hz); the ticks in between send its last action again, through an optional
  first-order low-pass (``action_cutoff_hz``), as ros2_control stacks run a fast loop around a
  slow policy. Every tick, policy or not, runs the e-stop and watchdog checks and the torque clamp
  and rate limit, so a stale JointState stops the arm on the next inner tick, not the next policy
  tick. After any safe tick the next tick runs the model again (a held action never outlives a fault).
- **deactivate**: stop the loop and publish the safe action once.
- **cleanup** / **shutdown**: release the model, subscriptions, publishers and services.

Safety (each path tested over real DDS):

- Watchdog: a ``JointState`` older than ``joint_state_max_age_s`` (or a goal older than
  ``goal_max_age_s`` when that is > 0) switches to the safe action on the next tick and latches a
  fault, reported as ERROR on ``/diagnostics``, until a fresh message arrives. The node measures
  its reaction on its own clock: ``joint_state_trip_age_ms`` (the JointState's age at the tripping
  tick) and ``joint_state_trip_tick_gap_ms`` (that tick's distance to the one before), so that
  ``max age < trip age <= max age + tick gap`` shows it tripped on the first stale tick.
- NaN/inf in an input or in the model's output → the safe action for that tick (counted).
- E-stop: ``True`` on ``estop_topic`` latches the safe action; only the ``~/reset_estop``
  (``std_srvs/Trigger``) service clears it, and only while the running model still verifies:
  its folder is re-verified against the current ``trusted_keys`` and must be the signed model
  that is loaded (same ONNX sha256); otherwise the e-stop stays engaged and the response says
  why. With ``allow_uncertified`` an uncertified model's reset is accepted and logged. The
  caller itself is not authenticated (a ``Trigger`` carries nothing to check): that needs
  DDS-Security (``deploy/ros/README.md``).
- Safe action: ``zero`` torque, or ``damping`` ``τ = -damping_gain·q̇`` while velocities are fresh
  (zero otherwise). A robot should use ``damping`` with a gain tuned for the arm: it brings a moving
  arm to rest instead of letting it coast. The default is ``zero`` because it needs no sensor data
  and no robot-specific gain (``deploy/ros/policy_server.yaml`` sets ``damping``). A contract of
  position targets refuses both at configure (a zero target would drive the arm to its zero pose):
  it takes ``hold``, the last measured joint positions.
- Loop overruns (a tick longer than the period, or a gap over 1.5 periods) and skipped ticks (the
  loop fell more than a period behind and dropped them) are counted.

Hot swap: set the ``model_dir`` parameter, then call ``~/swap_model`` (``std_srvs/Trigger``).
The new folder is loaded and verified (the same signature and certificate checks as configure,
with the current ``trusted_keys``) in the service's thread while the loop keeps running, its
contract must be compatible (joints, rate, observation layout, limits), and the model reference is swapped
between two ticks. On any failure the current model keeps running and the response (and the
diagnostics) give the reason.

The node imports no torch, pybullet or minari: only rclpy, the message packages, numpy,
``cryptography`` and onnxruntime (or onnxruntime-gpu).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.wait_for_message import wait_for_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, Header
from std_srvs.srv import Trigger

from symgate_ros.model import ModelError, ObservationSource, PolicyModel, robot_mismatches, verify_certificate
from symgate_ros.safety import SAFE_ACTIONS, ActionFilter, EStop, LoopMonitor, LowPass, Watchdog, safe_action
from symgate_ros.signature import SignatureError, TrustedKey, load_trusted_keys

#: Which JointState array feeds each joint signal group of the observation.
JOINT_FIELDS = {"joint_position": "position", "joint_velocity": "velocity", "joint_effort": "effort"}
#: The signal group fed from the goal topic (components x, y, z of the point).
GOAL_INPUT = "goal_position"

PARAMETERS: dict[str, tuple[Any, str]] = {
    "model_dir": ("", "Model folder made by symgate export and certified by symgate gate."),
    "trusted_keys": (
        Parameter.Type.STRING_ARRAY,
        "PEM public keys (files, or directories of *.pub/*.pem) whose model signatures are accepted.",
    ),
    "allow_uncertified": (False, "Serve a model without a valid signed gate certificate (development only)."),
    "robot_profile": (
        "",
        "This robot's profile (robot.yaml); configure refuses a model whose contract does not match it. "
        "Empty: no check.",
    ),
    "joint_states_topic": ("/joint_states", "sensor_msgs/JointState input."),
    "goal_topic": ("/goal", "geometry_msgs/PointStamped goal in the robot's base frame."),
    "commands_topic": (
        "/joint_commands",
        "std_msgs/Float64MultiArray commands out (contract joint order): torques, velocity or position targets, "
        "as the contract's action_interface says.",
    ),
    "estop_topic": ("/estop", "std_msgs/Bool; True latches the e-stop."),
    "control_hz": (0.0, "Control rate; 0 = the contract's."),
    "tick_source": (
        "timer",
        "timer: fixed-rate ticks at the control rate; joint_state: a tick per new JointState (lowest latency; "
        "the sensor sets the rate), or after one control period without one.",
    ),
    "joint_state_max_age_s": (0.05, "Watchdog: the latest JointState may be at most this old."),
    "goal_max_age_s": (0.0, "Watchdog on the goal; 0 = the goal only has to have arrived once."),
    "joint_state_timeout_s": (5.0, "configure waits this long for the first JointState."),
    "safe_action": (
        "zero",
        "Safe action: zero (no torque, or zero velocity) or damping (tau = -damping_gain * velocity, zero when "
        "velocities are stale or not finite) for effort and velocity contracts; hold (the last measured joint "
        "positions) for position contracts, which refuse the other two at configure. Torque robots should use "
        "damping with a gain tuned for the arm (deploy/ros/policy_server.yaml); zero is the default because it "
        "needs no sensor data and no robot-specific gain.",
    ),
    "damping_gain": (0.5, "Damping gain of the safe action, N·m·s/rad."),
    "max_torque_rate": (200.0, "Largest torque change per second, N·m/s (0 = no limit)."),
    "policy_hz": (
        0.0,
        "Inner loop: run the model every round(control_hz / policy_hz) ticks and send its last action on the "
        "ticks in between (safety checks and limits every tick); 0 = the model runs every tick.",
    ),
    "action_cutoff_hz": (
        0.0,
        "Cutoff of a first-order low-pass on the policy action, applied every tick before the limits "
        "(smooths a held action between policy ticks); 0 = no filter.",
    ),
    "diagnostics_period_s": (1.0, "Period of /diagnostics."),
    "publish_trace": (
        False,
        "Publish ~/command_trace: a Header with the stamp of the JointState each policy command used.",
    ),
}


def _fed(source: ObservationSource) -> bool:
    """Whether the node can feed this observation component: a contract joint's JointState field, or a goal axis."""
    if source.group == GOAL_INPUT:
        return source.axis in ("x", "y", "z")
    return source.group in JOINT_FIELDS and source.joint >= 0


class SensorThread:
    """Subscriptions on a hidden helper node, spun by a ``SingleThreadedExecutor`` of their own on one thread.

    rclpy rebuilds an executor's wait set in Python on every wake-up, entity by entity: on the
    lifecycle node (lifecycle, parameter and our services, the diagnostics timer, every entity's QoS
    event handlers) each 500 Hz ``JointState`` cost about twice a bare relay's receive. The helper
    node holds only these subscriptions (no parameter services, no rosout) and ignores the process's
    ``--ros-args``: it subscribes to the topics as ``owner`` resolved them, its remappings and
    namespace included.

    Args:
        owner: The node whose topics these are.
        subscriptions: ``(message type, topic as the owner names it, callback)`` each.
    """

    def __init__(self, owner: Node, subscriptions: list[tuple[type, str, Callable[[Any], None]]]) -> None:
        self.node = Node(
            f"_{owner.get_name()}_sensors",
            namespace=owner.get_namespace(),
            context=owner.context,
            use_global_arguments=False,
            enable_rosout=False,
            start_parameter_services=False,
        )
        for message_type, topic, callback in subscriptions:
            self.node.create_subscription(message_type, owner.resolve_topic_name(topic), callback, 10)
        self.executor = SingleThreadedExecutor(context=owner.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, name="sensors", daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        with contextlib.suppress(ExternalShutdownException):  # SIGINT, SIGTERM: the owner's executor handles it
            self.executor.spin()

    def close(self) -> None:
        """Stop the executor, wait for its thread and destroy the helper node."""
        self.executor.shutdown()
        self.thread.join()
        self.node.destroy_node()


class PolicyServer(LifecycleNode):
    """Serves one certified policy; see the module docstring for the lifecycle and safety contract."""

    def __init__(self, node_name: str = "policy_server", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self._lock = threading.Lock()
        self._model: PolicyModel | None = None
        self._entities: list[Any] = []
        self._sensors: SensorThread | None = None
        self._loop: threading.Thread | None = None
        self._stop = threading.Event()
        self._state_arrived = threading.Event()
        self._diagnostics_timer: Any = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._joint_state: JointState | None = None
        self._joint_index: dict[tuple[str, ...], list[int] | None] = {}
        self._name_error = ""
        self._held_position: np.ndarray | None = None  # the last measured joint positions (safe_action hold)
        self._goal: PointStamped | None = None
        self.estop = EStop()
        self.nan_inputs = 0
        self.nan_outputs = 0
        self.safe_ticks = 0
        self.last_safe_reason = ""
        self.swap_status = "none"

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _trusted(self) -> dict[str, TrustedKey]:
        """The keys in ``trusted_keys`` now (read at each verification, so that rotation takes effect)."""
        try:
            entries = self._param("trusted_keys")
        except ParameterUninitializedException:
            entries = []
        try:
            return load_trusted_keys(entries)
        except SignatureError as error:
            raise ModelError(f"trusted_keys: {error}") from error

    def _load(self, directory: Path) -> PolicyModel:
        """Load and verify a model folder against the current trusted keys; log an ``allow_uncertified`` override."""
        model = PolicyModel(directory, trusted=self._trusted(), allow_uncertified=self._param("allow_uncertified"))
        if model.certification is None:
            self.get_logger().warning(
                f"allow_uncertified: serving an UNCERTIFIED model from {directory}: {model.uncertified_reason}"
            )
        return model

    # ------------------------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and verify the model, subscribe, wait for the first JointState and check joint names."""
        self._reset_state()
        try:
            model = self._load(Path(self._param("model_dir")))
            if self._param("robot_profile"):
                mismatches = robot_mismatches(model.contract, Path(self._param("robot_profile")))
                if mismatches:
                    raise ModelError(f"the model does not fit this robot: {'; '.join(mismatches)}")
            unsupported = [f"{s.group}.{s.axis}" for s in model.observation if not _fed(s)]
            if unsupported:
                raise ModelError(f"observation components {unsupported} cannot be fed from JointState or the goal")
            mode, interface = self._param("safe_action"), model.contract.get("action_interface", "effort")
            if mode not in SAFE_ACTIONS:
                raise ValueError(f"safe_action must be one of {list(SAFE_ACTIONS)}, got {mode!r}")
            if interface not in SAFE_ACTIONS[mode]:
                safe = [m for m, interfaces in SAFE_ACTIONS.items() if interface in interfaces]
                raise ValueError(f"safe_action {mode!r} is not safe for {interface} targets: use one of {safe}")
            if self._param("tick_source") not in ("timer", "joint_state"):
                raise ValueError(f"tick_source must be 'timer' or 'joint_state', got {self._param('tick_source')!r}")
            hz = self._param("control_hz") or model.control_hz
            if not 0.0 <= self._param("policy_hz") <= hz:
                raise ValueError(f"policy_hz must be between 0 and the control rate {hz:g} Hz")
            if self._param("action_cutoff_hz") < 0.0:
                raise ValueError(f"action_cutoff_hz must be >= 0, got {self._param('action_cutoff_hz')}")
        except (ModelError, ValueError) as error:
            self.get_logger().error(f"configure refused: {error}")
            return TransitionCallbackReturn.FAILURE
        self._model = model
        self._commands = self.create_publisher(Float64MultiArray, self._param("commands_topic"), 10)
        self._trace = self.create_publisher(Header, "~/command_trace", 10) if self._param("publish_trace") else None
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # The watchdogs first: the sensor thread calls the callbacks as soon as it starts.
        self.joint_watchdog = Watchdog("joint_states", self._param("joint_state_max_age_s"))
        self.goal_watchdog = Watchdog("goal", self._param("goal_max_age_s"))
        self._sensors = SensorThread(
            self,
            [
                (JointState, self._param("joint_states_topic"), self._on_joint_state),
                (PointStamped, self._param("goal_topic"), self._on_goal),
            ],
        )
        self._entities = [
            self.create_subscription(Bool, self._param("estop_topic"), self._on_estop, 10),
            self.create_service(Trigger, "~/reset_estop", self._on_reset_estop),
            self.create_service(Trigger, "~/swap_model", self._on_swap_model),
            self._commands,
            self._diagnostics,
            *([self._trace] if self._trace else []),
        ]
        received, first = wait_for_message(
            JointState, self, self._param("joint_states_topic"), time_to_wait=self._param("joint_state_timeout_s")
        )
        if received:
            self._on_joint_state(first)
        if self._joint_state is None or self._name_error:
            why = self._name_error or f"no JointState on {self._param('joint_states_topic')} within the timeout"
            self.get_logger().error(f"configure refused: {why}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._diagnostics_timer = self.create_timer(self._param("diagnostics_period_s"), self._publish_diagnostics)
        model.act(self._observation(model, self._joint_state, PointStamped()))  # warm-up (the first run allocates)
        signer = model.certification.signer.key_id[:12] if model.certification else "NONE"
        self.get_logger().info(
            f"configured {model.directory} (sha256 {model.onnx_sha256[:12]}, certificate "
            f"{(model.certificate_id or 'NONE')[:12]} signed by key {signer}, {model.provider})"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the control loop at the contract's rate (or the ``control_hz`` override)."""
        assert self._model is not None
        hz = self._param("control_hz") or self._model.control_hz
        rate = self._param("max_torque_rate")
        self._filter = ActionFilter(self._model.action_low, self._model.action_high, rate / hz if rate > 0 else np.inf)
        self._lowpass = LowPass(self._param("action_cutoff_hz"), 1.0 / hz)
        policy_hz = self._param("policy_hz")
        self._policy_every = max(1, round(hz / policy_hz)) if policy_hz > 0 else 1
        self._action: np.ndarray | None = None  # the policy's last action, held between policy ticks
        self._ticks_to_policy = 0
        self.monitor = LoopMonitor(1.0 / hz)
        self._stop.clear()
        run = self._run_on_joint_states if self._param("tick_source") == "joint_state" else self._run
        self._loop = threading.Thread(target=run, args=(1.0 / hz,), name="control_loop", daemon=True)
        self._loop.start()
        policy = f", the model every {self._policy_every} ticks ({hz / self._policy_every:g} Hz)"
        self.get_logger().info(f"active at {hz:g} Hz{policy if self._policy_every > 1 else ''}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the loop, then publish the safe action."""
        self._stop_loop()
        self._publish(self._safe("deactivated"), None)
        return super().on_deactivate(state)

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._stop.set()
            self._loop.join()
            self._loop = None

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the model and every ROS entity."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything; the safe action goes out first if the loop was running."""
        if self._loop is not None:
            self.on_deactivate(state)
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        self._stop_loop()
        if self._sensors is not None:
            self._sensors.close()
            self._sensors = None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        for entity in self._entities:
            destroy = getattr(self, f"destroy_{_kind(entity)}")
            destroy(entity)
        self._entities = []
        with self._lock:
            self._model = None

    # ------------------------------------------------------------------------------------ inputs
    def _on_joint_state(self, message: JointState) -> None:
        assert self._model is not None
        names = tuple(message.name)
        if names not in self._joint_index:
            missing = [j for j in self._model.joint_names if j not in names]
            self._joint_index[names] = None if missing else [names.index(j) for j in self._model.joint_names]
            self._name_error = f"JointState lacks joints {missing} of the contract" if missing else ""
        if self._joint_index[names] is None:
            return  # never feeds the watchdog: the loop falls back to the safe action
        self._joint_state = message
        self.joint_watchdog.feed(time.monotonic())
        self._state_arrived.set()

    def _on_goal(self, message: PointStamped) -> None:
        self._goal = message
        self.goal_watchdog.feed(time.monotonic())

    def _on_estop(self, message: Bool) -> None:
        if message.data and not self.estop.engaged:
            self.get_logger().error("E-STOP engaged: safe action until ~/reset_estop")
        self.estop.signal(bool(message.data))

    def _observation(self, model: PolicyModel, state: JointState, goal: PointStamped) -> np.ndarray:
        """The graph's ``(1, D)`` float32 input: each component from its JointState array or goal axis."""
        index = self._joint_index[tuple(state.name)]
        assert index is not None
        values = [
            getattr(goal.point, s.axis) if s.joint < 0 else getattr(state, JOINT_FIELDS[s.group])[index[s.joint]]
            for s in model.observation
        ]
        return np.asarray([values], dtype=np.float32)

    # ------------------------------------------------------------------------------------ loop
    def _run(self, period_s: float) -> None:
        """The fixed-rate control loop, on its own thread so that no callback of the executor can delay it.

        Ticks are scheduled on absolute times (no drift): a late tick is followed at once by the next
        one; when the loop falls more than a period behind, the ticks in between are dropped (counted
        as skipped, i.e. missed) and the schedule restarts from now.
        """
        deadline = time.monotonic()
        while not self._stop.is_set():
            self._tick()
            deadline += period_s
            delay = deadline - time.monotonic()
            if delay < -period_s:
                self.monitor.skip(int(-delay // period_s))
                deadline = time.monotonic()
            elif delay > 0:
                self._stop.wait(delay)

    def _run_on_joint_states(self, period_s: float) -> None:
        """The sensor-driven loop: a tick as soon as a new JointState arrives, or one period after the last tick.

        The fallback tick keeps the watchdog working when the sensor stops.
        """
        while not self._stop.is_set():
            self._state_arrived.wait(period_s)
            self._state_arrived.clear()
            if not self._stop.is_set():
                self._tick()

    def _safe(self, reason: str) -> np.ndarray:
        model = self._model
        joints = len(model.joint_names) if model else 0
        velocity = None
        if self._joint_state is not None and model is not None:
            index = self._joint_index.get(tuple(self._joint_state.name))
            if index is not None and len(self._joint_state.position) == len(self._joint_state.name):
                position = np.asarray([self._joint_state.position[i] for i in index], dtype=np.float64)
                if np.isfinite(position).all():
                    self._held_position = position
            fresh = not self.joint_watchdog.faulted
            if fresh and index is not None and len(self._joint_state.velocity) == len(self._joint_state.name):
                velocity = np.asarray([self._joint_state.velocity[i] for i in index], dtype=np.float64)
        self.safe_ticks += 1
        if reason != self.last_safe_reason:
            self.get_logger().warning(f"safe action: {reason}")
        self.last_safe_reason = reason
        mode, gain = self._param("safe_action"), self._param("damping_gain")
        return safe_action(mode, gain, joints, velocity, self._held_position)

    def _tick(self) -> None:
        start = time.monotonic()
        with self._lock:
            model = self._model
        state, goal = self._joint_state, self._goal
        reason = ""
        if model is None:
            reason = "no model"
        elif self.estop.engaged:
            reason = "e-stop engaged"
        elif not self.joint_watchdog.check(start) or state is None:
            reason = f"joint_states stale (age {self.joint_watchdog.age_s(start) * 1e3:.0f} ms)"
        elif not self.goal_watchdog.check(start) or goal is None:
            reason = "goal missing or stale"
        elif self._action is None or self._ticks_to_policy == 0:  # a policy tick
            observation = self._observation(model, state, goal)
            if not np.isfinite(observation).all():
                self.nan_inputs += 1
                reason = "NaN/inf in the inputs"
            else:
                t0 = time.perf_counter()
                torque = model.act(observation)
                self.monitor.inference(time.perf_counter() - t0)
                if not np.isfinite(torque).all():
                    self.nan_outputs += 1
                    reason = "NaN/inf from the model"
                else:
                    self._action, self._ticks_to_policy = torque, self._policy_every
        if reason:
            command = self._safe(reason)
            self._action = None  # the next tick runs the model again
            self._lowpass.reset(command)
            self._filter.hold(command)
            self._publish(command, None)
        else:
            assert self._action is not None
            self.last_safe_reason = ""
            self._ticks_to_policy -= 1
            self._publish(self._filter(self._lowpass(self._action)), state)
        self.monitor.tick(start, time.monotonic() - start)

    def _publish(self, command: np.ndarray, state: JointState | None) -> None:
        """Send a command; a policy command (``state`` given) is traced with the JointState it came from."""
        self._commands.publish(Float64MultiArray(data=command.tolist()))
        if self._trace is not None and state is not None:
            self._trace.publish(Header(stamp=state.header.stamp, frame_id=str(self.monitor.ticks)))

    # ------------------------------------------------------------------------------------ services
    def _on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        model = self._model
        try:
            if model is None:
                raise ModelError("the node is not configured")
            if model.certification is not None:  # the loaded, signed model must still verify, with today's keys
                verify_certificate(model.directory, model.contract, model.onnx_sha256, self._trusted())
            elif not self._param("allow_uncertified"):
                raise ModelError("the running model is not certified")
        except ModelError as error:
            response.success, response.message = False, f"reset refused, e-stop stays engaged: {error}"
            self.get_logger().error(response.message)
            return response
        was = self.estop.reset()
        response.success = True
        response.message = "e-stop cleared" if was else "e-stop was not engaged"
        if model.certification is None:
            response.message += " (UNCERTIFIED model, allow_uncertified)"
            self.get_logger().warning(response.message)
        else:
            self.get_logger().info(response.message)
        return response

    def _on_swap_model(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        directory = Path(self._param("model_dir"))
        current = self._model
        try:
            if current is None:
                raise ModelError("the node is not configured")
            candidate = self._load(directory)
            problems = current.compatible_with(candidate)
            if problems:
                raise ModelError(f"{directory}: not compatible with the running model: {'; '.join(problems)}")
        except ModelError as error:
            response.success, response.message = False, f"swap refused, still serving the current model: {error}"
            self.swap_status = response.message
            self.get_logger().error(response.message)
            return response
        with self._lock:  # between two ticks: the loop reads the reference once per tick
            self._model = candidate
        response.success = True
        response.message = f"serving {directory} (sha256 {candidate.onnx_sha256[:12]})"
        self.swap_status = response.message
        self.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        model = self._model
        if model is None:
            return
        status = DiagnosticStatus(name=f"{self.get_name()}: policy", hardware_id=model.onnx_sha256[:16])
        active = self._loop is not None
        stats = self.monitor.summary() if active else {}
        faults = [w.name for w in (self.joint_watchdog, self.goal_watchdog) if w.faulted]
        if self.estop.engaged or faults or self._name_error:
            status.level = DiagnosticStatus.ERROR
            status.message = "; ".join(
                [*(["e-stop engaged"] if self.estop.engaged else []), *(f"{f} stale" for f in faults), self._name_error]
            ).strip("; ")
        elif model.certificate_id is None or self.nan_inputs or self.nan_outputs:
            status.level = DiagnosticStatus.WARN
            status.message = "uncertified model" if model.certificate_id is None else "NaN/inf seen"
        else:
            status.level = DiagnosticStatus.OK
            status.message = "active" if active else "inactive"
        values = {
            "model_dir": str(model.directory),
            "model_sha256": model.onnx_sha256,
            "certificate_id": model.certificate_id or "UNCERTIFIED",
            "signed_by": model.certification.signer.key_id if model.certification else "UNCERTIFIED",
            "execution_provider": model.provider,
            # The sensor thread may feed the watchdog at any moment: a message newer than "now" is 0 ms old.
            "joint_state_age_ms": f"{max(0.0, self.joint_watchdog.age_s(time.monotonic())) * 1e3:.1f}",
            **{
                f"joint_state_{key}_ms": f"{value * 1e3:.3f}"
                for key, value in (
                    ("trip_age", self.joint_watchdog.trip_age_s),
                    ("trip_tick_gap", self.joint_watchdog.trip_gap_s),
                )
                if value is not None
            },
            "watchdog": "FAULT" if faults else "ok",
            "estop": "ENGAGED" if self.estop.engaged else "clear",
            "nan_inputs": str(self.nan_inputs),
            "nan_outputs": str(self.nan_outputs),
            "safe_ticks": str(self.safe_ticks),
            "last_safe_reason": self.last_safe_reason,
            "swap": self.swap_status,
            **{key: f"{value:.1f}" for key, value in stats.items()},
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        self._diagnostics.publish(
            DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status])
        )


def _kind(entity: Any) -> str:
    """Publisher / subscription / service, for the matching ``destroy_*`` call."""
    return {"Publisher": "publisher", "Subscription": "subscription", "Service": "service"}[type(entity).__name__]


def main(args: list[str] | None = None) -> None:
    """Console entry point: spin a PolicyServer on a single-threaded executor until shutdown.

    This executor runs the lifecycle and the other services, the e-stop subscription and the diagnostics
    timer; the joint state and goal subscriptions run on their own executor thread (:class:`SensorThread`)
    and the control loop on another (see :meth:`PolicyServer.on_activate`), so no callback can delay a tick.
    """
    rclpy.init(args=args)
    node = PolicyServer()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
