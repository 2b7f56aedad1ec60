"""One Gymnasium reach env for any robot profile (``symgate/ArmReach-v0``), simulated in PyBullet.

The context θ is a rotation about the base z axis: the goal lies at bearing θ on the profile's
goal region (radius and height drawn per episode), and in ``relative`` start mode the symmetry
joint starts at θ plus its profile value, so every context is the exact rotation of context 0.

Observations are the raw signals a real arm reports, named in ``observation_names``:
``joint_position.<joint>`` (continuous joints wrapped to [-π, π)), ``joint_velocity.<joint>``
and ``goal_position.{x,y,z}`` in the base frame. Actions are the profile's interface targets
(``joint_effort``, ``joint_velocity_target`` or ``joint_position_target``), one per controlled joint, clipped to
the limits. Uncontrolled joints are held at their profile positions by position motors.

Reward: 1 and termination when the end effector's link frame is within ``success_radius`` of
the goal (optionally mixed with progress shaping); truncation at ``max_episode_steps``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from sim.bullet import connect_direct, pybullet
from sim.config import DomainRandomization, ReacherConfig
from sim.contexts import ContextSets, wrap_angle
from sim.reacher import ArmSceneFacts, PhysicsSample
from sim.robots.profile import DEFAULT_ROBOT, ActionInterfaceName, Robot, load_profile

PhysicsListener = Callable[[PhysicsSample], None]
#: Gymnasium id of :class:`ArmReachEnv` (registered by ``import sim``).
ENV_ID = "symgate/ArmReach-v0"


def robot_of(env_spec: Mapping[str, Any]) -> str | None:
    """The robot profile an env spec (``{"id": ..., "kwargs": ...}``, e.g. a dataset's eval_env_spec) names, if any."""
    if env_spec.get("id") != ENV_ID:
        return None
    robot = env_spec.get("kwargs", {}).get("robot")
    return str(robot) if robot is not None else None


def env_urdf(env_spec: Mapping[str, Any]) -> Path:
    """The URDF of the arm an env spec simulates: its robot profile's, or the Rotational Reacher config's."""
    robot = robot_of(env_spec)
    return load_profile(robot).urdf_path if robot is not None else ReacherConfig.from_env_spec(env_spec).urdf


def env_contexts(env_spec: Mapping[str, Any]) -> ContextSets:
    """The context sets of an env spec: its robot profile's, or the Rotational Reacher config's."""
    robot = robot_of(env_spec)
    return load_profile(robot).profile.contexts if robot is not None else ReacherConfig.from_env_spec(env_spec).contexts


class ArmReachEnv(gym.Env[NDArray[np.float32], NDArray[np.float32]]):
    """Reach a goal with any serial arm described by a robot profile.

    Reset options: ``{"context": θ}`` (rad), otherwise drawn from the profile's
    ``reset_context_set``; ``{"joint_position": [...], "joint_velocity": [...]}`` starts from that
    exact joint state (controlled joints, action order).

    Args:
        robot: A profile name, a path to a profile YAML, or a loaded :class:`Robot`.
        render_mode: None or ``"rgb_array"``.
        randomization: Domain randomisation replacing the profile's (e.g. a gate suite's); None: the profile's.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 20}  # noqa: RUF012 (Gymnasium's API)

    def __init__(
        self,
        robot: str | Robot = DEFAULT_ROBOT,
        render_mode: str | None = None,
        randomization: DomainRandomization | Mapping[str, Any] | None = None,
    ) -> None:
        self.robot = robot if isinstance(robot, Robot) else load_profile(robot)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        profile = self.profile = self.robot.profile
        if randomization is not None:
            profile = self.profile = profile.model_copy(
                update={"randomization": DomainRandomization.model_validate(randomization)}
            )
        self.metadata = {**self.metadata, "render_fps": profile.control_hz}
        self.observation_names = self.robot.observation_names
        self.action_names = self.robot.action_names
        self.joint_count = len(profile.joints)
        limits = self.robot.limits
        self._continuous = np.array([limit.continuous for limit in limits])
        position_bound = np.array(
            [
                math.pi
                if limit.continuous
                else max(abs(limit.lower), abs(limit.upper)) + (0.1 if limit.angular else 0.01)
                for limit in limits
            ]
        )
        velocity_bound = np.full(self.joint_count, np.inf)
        goal = profile.task.goal
        reach = goal.radius[1]
        margin = profile.task.success_radius  # a fixed goal height still gets a box of non-zero width
        low_goal = np.array([-reach, -reach, goal.height[0] - margin])
        high_goal = np.array([reach, reach, goal.height[1] + margin])
        self.observation_space = spaces.Box(
            np.concatenate([-position_bound, -velocity_bound, low_goal]).astype(np.float32),
            np.concatenate([position_bound, velocity_bound, high_goal]).astype(np.float32),
            dtype=np.float32,
        )
        self.action_low, self.action_high = self.robot.action_limits()
        self.action_space = spaces.Box(
            self.action_low.astype(np.float32), self.action_high.astype(np.float32), dtype=np.float32
        )
        self._effort = np.array([limit.effort for limit in limits])
        self._velocity_limit = np.array([limit.velocity for limit in limits])
        self._end_effector = profile.task.end_effector

        self._bullet = connect_direct()
        self._step_simulation = self._bullet.stepSimulation
        self._motor_array = self._bullet.setJointMotorControlArray
        self._get_joint_states = self._bullet.getJointStates
        self._listeners: list[PhysicsListener] = []
        self._body = -1
        self._joint_ids: list[int] = []
        self._pending: deque[NDArray[np.float64]] = deque()
        self.context = 0.0
        self.goal_position = np.zeros(3)
        self._steps = 0
        self._physics_step = 0
        self._distance = 0.0
        self._start_distance = 1.0
        self._friction = np.zeros(self.joint_count)
        self._world: int | None = None

    # ----------------------------------------------------------------------------- physics
    def add_physics_listener(self, listener: PhysicsListener) -> None:
        """Call ``listener`` after every physics step (e.g. to record sensor data at its own rate)."""
        self._listeners.append(listener)

    def _build_world(self) -> None:
        bc, profile = self._bullet, self.profile
        bc.resetSimulation()
        bc.setTimeStep(1.0 / profile.physics_hz)
        bc.setGravity(0.0, 0.0, -9.81)
        flags = pybullet.URDF_USE_INERTIA_FROM_FILE
        if profile.self_collision:
            flags |= pybullet.URDF_USE_SELF_COLLISION
        self._body = bc.loadURDF(str(self.robot.urdf_path), useFixedBase=True, flags=flags)
        by_name = {bc.getJointInfo(self._body, i)[1].decode(): i for i in range(bc.getNumJoints(self._body))}
        self._joint_ids = [by_name[name] for name in profile.joints]
        self._held = [(by_name[name], value) for name, value in profile.held_joints.items()]
        for link in range(-1, bc.getNumJoints(self._body)):
            bc.changeDynamics(self._body, link, linearDamping=0.0, angularDamping=0.0)
        self._nominal_mass = [bc.getDynamicsInfo(self._body, joint_id)[0] for joint_id in self._joint_ids]
        self._saved_state = bc.saveState()

    def _randomize(self) -> None:
        dr = self.profile.randomization
        bc, rng = self._bullet, self.np_random
        mass_scale = rng.uniform(*dr.link_mass_scale, size=self.joint_count)
        friction = rng.uniform(*dr.joint_friction, size=self.joint_count)
        latency = int(rng.integers(dr.action_latency_steps[0], dr.action_latency_steps[1] + 1))
        for joint_id, limit, mass, scale in zip(
            self._joint_ids, self.robot.limits, self._nominal_mass, mass_scale, strict=True
        ):
            bc.changeDynamics(self._body, joint_id, mass=mass * scale, jointDamping=limit.damping)
        self._pending = deque(self.idle_command() for _ in range(latency))
        self._friction = friction + np.array([limit.friction for limit in self.robot.limits])

    def idle_command(self) -> NDArray[np.float64]:
        """What the motors do before the first command arrives: no torque, no motion, or stay put."""
        if self.profile.action.interface == "position":
            return self._joint_state()[0] if self._body >= 0 else np.zeros(self.joint_count)
        return np.zeros(self.joint_count)

    def _joint_state(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        states = self._get_joint_states(self._body, self._joint_ids)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def command(self, action: Any) -> NDArray[np.float64]:
        """The joint targets an action commands, clipped to the action limits."""
        target: NDArray[np.float64] = np.clip(
            np.asarray(action, dtype=np.float64).reshape(self.joint_count), self.action_low, self.action_high
        )
        return target

    def _apply(self, target: NDArray[np.float64]) -> None:
        """Set the velocity or position motors (they persist; torques are re-applied every physics step)."""
        bc, body, ids = self._bullet, self._body, self._joint_ids
        interface = self.profile.action.interface
        if interface == "velocity":
            self._motor_array(body, ids, pybullet.VELOCITY_CONTROL, targetVelocities=target, forces=self._effort)
        else:
            for joint_id, position, effort, velocity in zip(
                ids, target, self._effort, self._velocity_limit, strict=True
            ):
                bc.setJointMotorControl2(
                    body,
                    joint_id,
                    pybullet.POSITION_CONTROL,
                    targetPosition=float(position),
                    force=float(effort),
                    maxVelocity=float(velocity),
                )

    # ----------------------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Start an episode in context ``options["context"]`` (rad) or one drawn from the profile."""
        super().reset(seed=seed)
        rng, profile = self.np_random, self.profile
        if options and "context" in options:
            self.context = float(options["context"])
        else:
            self.context = float(rng.choice(profile.contexts.angles(profile.reset_context_set)))
        noise = np.deg2rad(profile.start.noise_deg) * rng.uniform(-1.0, 1.0, size=self.joint_count)
        start = self.robot.start_position(self.context) + noise
        velocity = np.zeros(self.joint_count)
        if options and "joint_position" in options:
            start = np.asarray(options["joint_position"], dtype=np.float64).reshape(self.joint_count)
            velocity = np.asarray(options.get("joint_velocity", velocity), dtype=np.float64).reshape(self.joint_count)
        goal = profile.task.goal
        radius = rng.uniform(*goal.radius) if goal.radius[0] < goal.radius[1] else goal.radius[0]
        height = rng.uniform(*goal.height) if goal.height[0] < goal.height[1] else goal.height[0]
        if self._world is None:  # loading a URDF with meshes costs ~45 ms: build once, restore at each reset
            self._build_world()
            self._world = self._saved_state
        else:
            self._bullet.restoreState(self._world)
        self._randomize()
        bc = self._bullet
        for joint_id, value in self._held:
            bc.resetJointState(self._body, joint_id, value)
            bc.setJointMotorControl2(self._body, joint_id, pybullet.POSITION_CONTROL, targetPosition=value)
        for joint_id, angle, speed, friction in zip(self._joint_ids, start, velocity, self._friction, strict=True):
            bc.resetJointState(self._body, joint_id, float(angle), targetVelocity=float(speed))
            if profile.action.interface == "effort":  # free the joint but for its Coulomb friction
                bc.setJointMotorControl2(
                    self._body, joint_id, pybullet.VELOCITY_CONTROL, targetVelocity=0.0, force=float(friction)
                )
        self._pending = deque(self.idle_command() for _ in range(len(self._pending)))
        self.goal_position = np.array([radius * math.cos(self.context), radius * math.sin(self.context), height])
        self._steps = 0
        self._physics_step = 0
        observation, info = self._read_out(np.zeros(self.joint_count))
        self._start_distance = max(self._distance, profile.task.success_radius)
        return observation, info

    def step(self, action: Any) -> tuple[NDArray[np.float32], SupportsFloat, bool, bool, dict[str, Any]]:
        """Apply an action for one control period (``action_repeat`` physics steps)."""
        if self._body < 0:
            raise RuntimeError("call reset() before step()")
        self._pending.append(self.command(action))
        applied = self._pending.popleft()
        effort = self.profile.action.interface == "effort"
        if not effort:
            self._apply(applied)
        for _ in range(self.profile.action_repeat):
            if effort:  # Coulomb friction comes from the zero-velocity motors set at reset
                self._motor_array(self._body, self._joint_ids, pybullet.TORQUE_CONTROL, forces=applied)
            self._step_simulation()
            self._physics_step += 1
            if self._listeners:
                position, velocity = self._joint_state()
                sample = PhysicsSample(self._physics_step, position, velocity, applied.copy())
                for listener in self._listeners:
                    listener(sample)
        self._steps += 1
        previous = self._distance
        observation, info = self._read_out(applied)
        success = bool(info["is_success"])
        task = self.profile.task
        w = task.distance_shaping
        reward = (1.0 - w) * float(success) + w * (previous - self._distance) / self._start_distance
        truncated = not success and self._steps >= task.max_episode_steps
        return observation, reward, success, truncated, info

    def render(self) -> NDArray[np.uint8] | None:
        """A 240x240 RGB image of the arm from above and to the side (``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array":
            return None
        bc, size = self._bullet, 240
        reach = max(self.profile.task.goal.radius[1], 0.5)
        view = bc.computeViewMatrix(
            cameraEyePosition=(2.0 * reach, -2.0 * reach, 2.0 * reach),
            cameraTargetPosition=(0, 0, 0.3 * reach),
            cameraUpVector=(0, 0, 1),
        )
        projection = bc.computeProjectionMatrixFOV(fov=45.0, aspect=1.0, nearVal=0.1, farVal=10.0 * reach)
        _, _, rgba, _, _ = bc.getCameraImage(size, size, view, projection, renderer=pybullet.ER_TINY_RENDERER)
        return np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[..., :3].copy()

    def close(self) -> None:
        """Disconnect from the physics server."""
        if self._bullet is not None and self._bullet._client >= 0:
            self._bullet.disconnect()
            self._bullet._client = -1

    # ------------------------------------------------------- sim.robots.interface.SimulatedArm
    @property
    def joint_names(self) -> tuple[str, ...]:
        """Controlled joints in action order."""
        return self.robot.joint_names

    @property
    def joint_continuous(self) -> tuple[bool, ...]:
        """Per controlled joint: True when it has no position limits."""
        return tuple(bool(c) for c in self._continuous)

    @property
    def action_interface(self) -> ActionInterfaceName:
        """The profile's action interface."""
        return self.profile.action.interface

    @property
    def control_hz(self) -> int:
        """The profile's control rate, Hz."""
        return self.profile.control_hz

    @property
    def physics_hz(self) -> int:
        """The profile's physics rate, Hz."""
        return self.profile.physics_hz

    @property
    def contexts(self) -> ContextSets:
        """The profile's context sets."""
        return self.profile.contexts

    @property
    def reset_contexts(self) -> NDArray[np.float64]:
        """The profile's ``reset_context_set``."""
        return self.profile.contexts.angles(self.profile.reset_context_set)

    @property
    def base_frame(self) -> str:
        """The profile's base link."""
        return self.profile.base_link

    @property
    def robot_name(self) -> str:
        """The profile's name."""
        return self.robot.name

    @property
    def action_bounds(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The action limits (the profile's, else the URDF's)."""
        return self.action_low, self.action_high

    @property
    def discrete_actions(self) -> None:
        """Actions are continuous."""
        return None

    # ----------------------------------------------------------------------------- helpers
    def joint_state(self) -> PhysicsSample:
        """The current raw joint state (no noise), with zero effort; for loggers and tests."""
        position, velocity = self._joint_state()
        return PhysicsSample(self._physics_step, position, velocity, np.zeros(self.joint_count))

    def scene(self) -> ArmSceneFacts:
        """The reset arm for viewers, as its profile describes it."""
        profile = self.profile
        return ArmSceneFacts(
            self._bullet, self._body, self.robot.urdf_path, profile.base_link, profile.joints,
            dict(profile.held_joints), profile.task.end_effector, self.goal_position.copy(),
            profile.task.success_radius,
        )  # fmt: skip

    def end_effector_position(self) -> NDArray[np.float64]:
        """The end effector's link-frame position in the base frame, m (from the URDF chain)."""
        return self.robot.kinematics.position(self._end_effector, self._joint_state()[0])

    def _read_out(self, applied: NDArray[np.float64]) -> tuple[NDArray[np.float32], dict[str, Any]]:
        position, velocity = self._joint_state()
        hand = self.robot.kinematics.position(self._end_effector, position)
        self._distance = float(np.linalg.norm(hand - self.goal_position))
        info = {
            "context": self.context,
            "end_effector_position": hand,
            "distance": self._distance,
            "is_success": self._distance <= self.profile.task.success_radius,
            "applied_command": applied,
        }
        noise_std = self.profile.randomization.observation_noise_std
        if noise_std > 0:
            position = position + self.np_random.normal(0.0, noise_std, size=self.joint_count)
            velocity = velocity + self.np_random.normal(0.0, noise_std, size=self.joint_count)
        position = np.where(self._continuous, wrap_angle(position), position)
        return np.concatenate([position, velocity, self.goal_position]).astype(np.float32), info
