"""The Rotational Reacher: a contextual MDP on a torque-controlled 2-link arm in PyBullet.

Context θ is a rotation about the base z axis. The goal lies at bearing θ and distance
``goal_distance`` from the shoulder; in ``relative`` start mode the start pose is the same relative
to the shoulder→goal axis (shoulder angle θ + offset, fixed elbow), so every context is the exact
rotation of context 0 and an optimal policy is SO(2)-invariant. This is the paper's setting, with
the goal in the robot's base frame instead of the shoulder on a circle around the goal.

Observations are the raw signals a real arm reports, named component by component in
``observation_names``: ``joint_position`` (shoulder wrapped to [-π, π), elbow), ``joint_velocity``
and ``goal_position`` (x, y in the base frame). Actions are joint torques, continuous in
``[-τmax, τmax]²`` or one of the paper's 9 discrete torque pairs ``{-τmax, 0, τmax}²``.

Reward: 1 and termination when the hand is within ``success_radius`` of the goal, judged at the
end of the control step or (``success_rule: swept_path``) anywhere on the hand's path through the
step's physics sub-steps; optionally mixed with shaping; truncation at ``max_episode_steps``; the
undiscounted return is at most 1. ``deploy/env/reacher-paper.yaml`` is the authors' variant.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from sim.bullet import connect_direct, pybullet
from sim.config import ReacherConfig
from sim.contexts import ContextSets, wrap_angle
from sim.robot import load_robot_description

#: Action field group (joint torques, N·m).
ACTION_FIELD = "joint_effort"


@dataclass(frozen=True)
class ArmSceneFacts:
    """A reset arm as a viewer needs it: the simulator holding it and what its URDF and task say.

    Attributes:
        bullet: The env's PyBullet client (``p.DIRECT``).
        body: The arm's body id in it.
        urdf_path: The URDF the body was loaded from.
        base_link: The URDF's root link (the base frame).
        joint_names: Controlled joints, in action order.
        held_joints: Positions of the uncontrolled movable joints (unlisted: 0).
        end_effector_link: The link whose frame must reach the goal.
        goal: The goal in the world frame, x, y, z (m).
        success_radius: The goal's radius, m.
    """

    bullet: Any
    body: int
    urdf_path: Path
    base_link: str
    joint_names: tuple[str, ...]
    held_joints: Mapping[str, float]
    end_effector_link: str
    goal: NDArray[np.float64]
    success_radius: float


@dataclass(frozen=True)
class PhysicsSample:
    """The robot's state after one physics step, as a sensor would read it.

    Attributes:
        physics_step: Physics steps since reset (time = physics_step / physics_hz).
        joint_position: Raw joint angles in rad (the shoulder is not wrapped), chain order.
        joint_velocity: Joint velocities in rad/s.
        joint_effort: Torques applied during this step in N·m.
    """

    physics_step: int
    joint_position: NDArray[np.float64]
    joint_velocity: NDArray[np.float64]
    joint_effort: NDArray[np.float64]


PhysicsListener = Callable[[PhysicsSample], None]


def path_distance(point: NDArray[np.float64], path: NDArray[np.float64]) -> float:
    """Distance from ``point`` to the polyline through ``path`` (shape ``(n, 2)``, n ≥ 1), in m.

    For each segment [a, b]: t = clip((p - a)·(b - a) / |b - a|², 0, 1), distance |a + t·(b - a) - p|;
    the result is the smallest over segments (the distance to ``path[0]`` when n = 1).
    """
    start, end = path[:-1], path[1:]
    if len(start) == 0:
        return float(np.linalg.norm(path[0] - point))
    segment = end - start
    length2 = np.maximum(np.einsum("ij,ij->i", segment, segment), 1e-300)
    t = np.clip(np.einsum("ij,ij->i", point - start, segment) / length2, 0.0, 1.0)
    return float(np.min(np.linalg.norm(start + t[:, None] * segment - point, axis=1)))


class RotationalReacherEnv(gym.Env[NDArray[np.float32], Any]):
    """Continuous-torque Rotational Reacher (``symgate/RotationalReacher-v0``).

    Reset options: ``{"context": θ}`` with θ in rad; without it θ is drawn from the
    ``reset_context_set`` of the config. ``{"joint_position": [q1, q2], "joint_velocity": [v1, v2]}``
    starts from that exact joint state instead of the start pose (e.g. to check that the dynamics
    are equivariant on logged states).

    Args:
        config: A :class:`ReacherConfig`, a mapping of its fields, or None for the defaults.
        render_mode: None or ``"rgb_array"`` (a top-down camera image).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 50}  # noqa: RUF012 (Gymnasium's API)

    def __init__(self, config: ReacherConfig | Mapping[str, Any] | None = None, render_mode: str | None = None) -> None:
        self.config = config if isinstance(config, ReacherConfig) else ReacherConfig.model_validate(config or {})
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.config.control_hz}
        self.robot = load_robot_description(self.config.urdf)
        self.tau_max = self.robot.effort_limits
        joints = self.robot.joint_names
        self.observation_names: tuple[str, ...] = (
            *(f"joint_position.{j}" for j in joints),
            *(f"joint_velocity.{j}" for j in joints),
            "goal_position.x",
            "goal_position.y",
        )
        self.action_names: tuple[str, ...] = tuple(f"{ACTION_FIELD}.{j}" for j in joints)
        d = self.config.goal_distance
        high = np.array([math.pi, math.pi, np.inf, np.inf, d, d], dtype=np.float32)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.action_space = self._make_action_space()

        self._bullet = connect_direct()
        # BulletClient builds a new partial on every attribute access; the control loop's calls are bound once.
        self._step_simulation = self._bullet.stepSimulation
        self._set_torques = self._bullet.setJointMotorControlArray
        self._get_joint_states = self._bullet.getJointStates
        self._listeners: list[PhysicsListener] = []
        self._body = -1
        self._joint_ids: list[int] = []
        self._pending: deque[NDArray[np.float64]] = deque()
        self.context = 0.0
        self.goal_position = np.zeros(2)
        self._steps = 0
        self._physics_step = 0
        self._distance = 0.0
        self._start_distance = 1.0
        self._min_distance = 0.0
        self._hand = np.zeros(2)

    # ----------------------------------------------------------------------------- action space
    def _make_action_space(self) -> spaces.Space[Any]:
        tau = self.tau_max.astype(np.float32)
        return spaces.Box(-tau, tau, dtype=np.float32)

    def torque(self, action: Any) -> NDArray[np.float64]:
        """The joint torques (N·m) an action commands, clipped to the torque limits."""
        # np.clip's own loop is minimum(maximum(x, low), high); its Python wrapper costs more than the maths here.
        torque: NDArray[np.float64] = np.minimum(
            np.maximum(np.asarray(action, dtype=np.float64).reshape(2), -self.tau_max), self.tau_max
        )
        return torque

    # ----------------------------------------------------------------------------- physics
    def add_physics_listener(self, listener: PhysicsListener) -> None:
        """Call ``listener`` after every physics step (e.g. to record sensor data at its own rate)."""
        self._listeners.append(listener)

    def _build_world(self) -> None:
        """Rebuild the physics world from scratch, so that no solver state leaks across episodes."""
        bc = self._bullet
        bc.resetSimulation()
        bc.setTimeStep(1.0 / self.config.physics_hz)
        bc.setGravity(0.0, 0.0, -self.config.gravity)
        self._body = bc.loadURDF(
            str(self.robot.urdf_path), useFixedBase=True, flags=pybullet.URDF_USE_INERTIA_FROM_FILE
        )
        by_name = {bc.getJointInfo(self._body, i)[1].decode(): i for i in range(bc.getNumJoints(self._body))}
        self._joint_ids = [by_name[name] for name in self.robot.joint_names]
        if self.config.max_joint_speed is not None:
            for joint_id in self._joint_ids:
                bc.changeDynamics(self._body, joint_id, maxJointVelocity=self.config.max_joint_speed)
        for link in range(-1, bc.getNumJoints(self._body)):
            bc.changeDynamics(self._body, link, linearDamping=0.0, angularDamping=0.0)
        self._goal_marker = -1
        if self.render_mode is not None:  # purely visual: skipped headless, where it costs a third of a reset
            self._goal_marker = bc.createMultiBody(
                baseMass=0.0,
                baseVisualShapeIndex=bc.createVisualShape(
                    pybullet.GEOM_SPHERE, radius=self.config.success_radius, rgbaColor=(0.1, 0.8, 0.1, 0.6)
                ),
            )

    def _randomize(self) -> NDArray[np.float64]:
        """Draw this episode's domain randomisation; returns the joint friction torques."""
        dr = self.config.randomization
        bc, rng = self._bullet, self.np_random
        mass_scale = rng.uniform(*dr.link_mass_scale, size=2)
        friction = rng.uniform(*dr.joint_friction, size=2)
        latency = int(rng.integers(dr.action_latency_steps[0], dr.action_latency_steps[1] + 1))
        for joint_id, spec, scale in zip(self._joint_ids, self.robot.joints, mass_scale, strict=True):
            mass = bc.getDynamicsInfo(self._body, joint_id)[0]
            bc.changeDynamics(self._body, joint_id, mass=mass * scale, jointDamping=spec.damping)
        self._pending = deque(np.zeros(2) for _ in range(latency))
        nominal = np.array([spec.friction for spec in self.robot.joints])
        return np.asarray(friction + nominal, dtype=np.float64)

    def _joint_state(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        states = self._get_joint_states(self._body, self._joint_ids)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    # ----------------------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Start an episode in context ``options["context"]`` (rad) or a context drawn from the config."""
        super().reset(seed=seed)
        rng = self.np_random
        if options and "context" in options:
            self.context = float(options["context"])
        else:
            self.context = float(rng.choice(self.config.contexts.angles(self.config.reset_context_set)))
        noise = np.deg2rad(self.config.start_noise_deg) * rng.uniform(-1.0, 1.0, size=2)
        shoulder_offset, elbow = self.config.start_offset_rad
        bearing = self.context if self.config.start_mode == "relative" else 0.0
        start = np.array([bearing + shoulder_offset, elbow]) + noise
        velocity = np.zeros(2)
        if options and "joint_position" in options:
            start = np.asarray(options["joint_position"], dtype=np.float64).reshape(2)
            velocity = np.asarray(options.get("joint_velocity", velocity), dtype=np.float64).reshape(2)

        self._build_world()
        friction = self._randomize()
        for joint_id, angle, speed, f in zip(self._joint_ids, start, velocity, friction, strict=True):
            self._bullet.resetJointState(self._body, joint_id, angle, targetVelocity=speed)
            # A velocity motor with target 0 and force = friction is Coulomb friction; force 0 frees the joint.
            self._bullet.setJointMotorControl2(
                self._body, joint_id, pybullet.VELOCITY_CONTROL, targetVelocity=0.0, force=f
            )
        self.goal_position = self.config.goal_distance * np.array([math.cos(self.context), math.sin(self.context)])
        if self._goal_marker >= 0:
            self._bullet.resetBasePositionAndOrientation(self._goal_marker, (*self.goal_position, 0.05), (0, 0, 0, 1))
        self._steps = 0
        self._physics_step = 0
        observation, info = self._read_out(np.zeros(2))
        self._start_distance = max(self._distance, self.config.success_radius)  # shaping normaliser
        self._min_distance = self._distance
        return observation, info

    def step(self, action: Any) -> tuple[NDArray[np.float32], SupportsFloat, bool, bool, dict[str, Any]]:
        """Apply an action for one control period (``action_repeat`` physics steps)."""
        if self._body < 0:
            raise RuntimeError("call reset() before step()")
        self._pending.append(self.torque(action))
        applied = self._pending.popleft()
        swept = self.config.success_rule == "swept_path"
        hands = [self._hand]
        forces = applied.tolist()  # the same doubles; PyBullet reads a list faster than an array
        for _ in range(self.config.action_repeat):
            self._set_torques(self._body, self._joint_ids, pybullet.TORQUE_CONTROL, forces=forces)
            self._step_simulation()
            self._physics_step += 1
            if self._listeners or swept:
                position, velocity = self._joint_state()
                if swept:
                    hands.append(self.robot.forward_kinematics(position)[1])
                if self._listeners:
                    sample = PhysicsSample(self._physics_step, position, velocity, applied.copy())
                    for listener in self._listeners:
                        listener(sample)
        self._steps += 1
        previous = self._distance
        observation, info = self._read_out(applied, np.array(hands) if swept else None)
        success = info["is_success"]
        w = self.config.distance_shaping
        if self.config.shaping_rule == "progress":
            shaping = (previous - self._distance) / self._start_distance
        else:  # the authors': paid only on a new minimum of the (path) distance, never on the success step
            reach = info["path_distance"]
            d_max = self.config.goal_distance + self.robot.reach
            improved = reach < self._min_distance and not success
            shaping = (1.0 - reach / d_max) / self.config.max_episode_steps if improved else 0.0
            self._min_distance = min(self._min_distance, reach)
        reward = (1.0 - w) * float(success) + w * shaping
        truncated = not success and self._steps >= self.config.max_episode_steps
        return observation, reward, success, truncated, info

    def render(self) -> NDArray[np.uint8] | None:
        """A 240x240 top-down RGB image of the arm and the goal (``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array":
            return None
        bc, size = self._bullet, 240
        reach = self.robot.reach
        view = bc.computeViewMatrix(
            cameraEyePosition=(0, 0, 3.0 * reach), cameraTargetPosition=(0, 0, 0), cameraUpVector=(0, 1, 0)
        )
        projection = bc.computeProjectionMatrixFOV(fov=45.0, aspect=1.0, nearVal=0.1, farVal=10.0 * reach)
        _, _, rgba, _, _ = bc.getCameraImage(size, size, view, projection, renderer=pybullet.ER_TINY_RENDERER)
        return np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[..., :3].copy()

    def close(self) -> None:
        """Disconnect from the physics server."""
        if self._bullet is not None and self._bullet._client >= 0:
            self._bullet.disconnect()
            self._bullet._client = -1

    # ----------------------------------------------------------------------------- helpers
    def joint_state(self) -> PhysicsSample:
        """The current raw joint state (no noise), with zero effort; for loggers and tests."""
        position, velocity = self._joint_state()
        return PhysicsSample(self._physics_step, position, velocity, np.zeros(2))

    # ------------------------------------------------------- sim.robots.interface.SimulatedArm
    @property
    def joint_names(self) -> tuple[str, ...]:
        """Actuated joints in chain order (shoulder first)."""
        return self.robot.joint_names

    @property
    def joint_continuous(self) -> tuple[bool, ...]:
        """Per joint: True when it has no position limits."""
        return tuple(joint.continuous for joint in self.robot.joints)

    @property
    def action_interface(self) -> Literal["effort"]:
        """Actions are joint torques."""
        return "effort"

    @property
    def control_hz(self) -> int:
        """Control rate, Hz."""
        return self.config.control_hz

    @property
    def physics_hz(self) -> int:
        """Physics rate, Hz."""
        return self.config.physics_hz

    @property
    def contexts(self) -> ContextSets:
        """The config's context sets."""
        return self.config.contexts

    @property
    def reset_contexts(self) -> NDArray[np.float64]:
        """The config's ``reset_context_set``."""
        return self.config.contexts.angles(self.config.reset_context_set)

    @property
    def base_frame(self) -> str:
        """The URDF's root link, the frame of the goal."""
        return "base_link"

    @property
    def robot_name(self) -> None:
        """The paper's env has no robot profile."""
        return None

    @property
    def action_bounds(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The torque limits, ±τmax."""
        return -self.tau_max, self.tau_max

    @property
    def discrete_actions(self) -> NDArray[np.float64] | None:
        """The discrete variant's torque table; None here (continuous torques)."""
        return None

    def idle_command(self) -> NDArray[np.float64]:
        """Zero torque."""
        return np.zeros(2)

    def command(self, action: Any) -> NDArray[np.float64]:
        """The joint torques an action applies (:meth:`torque`)."""
        return self.torque(action)

    def scene(self) -> ArmSceneFacts:
        """The reset arm for viewers; the goal at the height of the hand (the arm's plane)."""
        bc, body = self._bullet, self._body
        links = [bc.getJointInfo(body, i)[12].decode() for i in range(bc.getNumJoints(body))]
        height = bc.getLinkState(body, links.index(self.robot.hand_link), computeForwardKinematics=True)[4][2]
        goal = np.array([*self.goal_position, height], dtype=np.float64)
        root = bc.getBodyInfo(body)[0].decode()
        return ArmSceneFacts(
            bc, body, self.robot.urdf_path, root, self.robot.joint_names, {}, self.robot.hand_link, goal,
            self.config.success_radius,
        )  # fmt: skip

    def _read_out(
        self, applied: NDArray[np.float64], hands: NDArray[np.float64] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Read the robot once: update the hand-goal distance, return (observation, info).

        ``hands``: the hand's positions at the step's physics sub-steps (swept-path success rule).
        """
        position, velocity = self._joint_state()
        elbow, hand = self.robot.forward_kinematics(position)
        self._hand = hand
        offset = hand - self.goal_position
        self._distance = math.sqrt(offset.dot(offset))  # np.linalg.norm's own formula for a vector, without its wrapper
        reach = self._distance if hands is None else min(self._distance, path_distance(self.goal_position, hands))
        info = {
            "context": self.context,
            "elbow_position": elbow,
            "hand_position": hand,
            "distance": self._distance,
            "path_distance": reach,  # = distance under the end_point rule
            "is_success": reach <= self.config.success_radius,
            "applied_torque": applied,
            "applied_command": applied,  # the key every SimulatedArm reports
        }
        noise_std = self.config.randomization.observation_noise_std
        if noise_std > 0:
            position = position + self.np_random.normal(0.0, noise_std, size=2)
            velocity = velocity + self.np_random.normal(0.0, noise_std, size=2)
        position[0] = wrap_angle(position[0])
        return np.concatenate([position, velocity, self.goal_position]).astype(np.float32), info


class RotationalReacherDiscreteEnv(RotationalReacherEnv):
    """The paper's discrete Rotational Reacher (``symgate/RotationalReacherDiscrete-v0``).

    Action ``i`` commands ``action_table[i]``, one of the 9 torque pairs ``{-τmax, 0, τmax}²``
    (shoulder level major, so index 4 is zero torque).
    """

    def _make_action_space(self) -> spaces.Space[Any]:
        levels = np.array([-1.0, 0.0, 1.0])
        grid = np.stack(np.meshgrid(levels, levels, indexing="ij"), axis=-1).reshape(-1, 2)
        self.action_table: NDArray[np.float64] = grid * self.tau_max
        return spaces.Discrete(len(self.action_table))

    @property
    def discrete_actions(self) -> NDArray[np.float64] | None:
        """The torques of each action index."""
        return self.action_table

    def torque(self, action: Any) -> NDArray[np.float64]:
        """The joint torques (N·m) of discrete action ``action``."""
        index = int(action)
        if not 0 <= index < len(self.action_table):
            raise ValueError(f"discrete action must be in [0, {len(self.action_table)}), got {action!r}")
        torque: NDArray[np.float64] = self.action_table[index].copy()
        return torque
