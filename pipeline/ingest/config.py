"""The ingest mapping: which bag topics and message fields become which named dataset fields.

Everything is by name: a dataset field is a named group of components (``joint_position`` with
one component per joint, named as in the URDF), joints are selected from a message's ``name`` array by
name, topics and message types are declared, and time is explicit (which clock, which
resampling rule). The built-in defaults map the default env's robot, its joints read from its URDF;
``deploy/ingest/reacher.yaml`` spells them out and documents every field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.io import sha256_json
from sim import ARM_ENV_ID, CONTINUOUS_ENV_ID
from sim.config import ReacherConfig
from sim.robot import load_robot_description
from sim.robots.profile import load_profile

TimeBase = Literal["header", "log", "header_shifted"]
ResampleRule = Literal["linear", "causal_linear", "zero_order_hold", "last_value"]


#: The components of a geometry_msgs Twist, in the order of the rows of a geometric Jacobian [v; ω].
TWIST_COMPONENTS = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z")
TWIST_TYPES = ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped")


def twist_prefix(msgtype: str) -> str:
    """Where a twist message keeps its components: ``twist.`` in a TwistStamped, the top level in a Twist."""
    return "twist." if msgtype == "geometry_msgs/msg/TwistStamped" else ""


class FieldMapping(BaseModel):
    """How one named dataset field is read from a bag topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(description="Topic the field is read from.")
    msgtype: str = Field(description="Expected ROS message type of the topic; any other type is an error.")
    path: str | None = Field(
        None,
        description="Attribute path of an array in the message (e.g. position, data; for a "
        "trajectory_msgs/msg/JointTrajectory, of each point: positions, velocities, effort); use with joints.",
    )
    joints: tuple[str, ...] | None = Field(
        None, description="Joint names selected from the array at `path`, in dataset order."
    )
    names_path: str | None = Field(
        "name",
        description="Attribute path of the joint-name array that `joints` are matched against; null: the array "
        "has no names and its entries are `joint_order` (default: `joints`) in order (e.g. a ros2_control command "
        "array).",
    )
    joint_order: tuple[str, ...] | None = Field(
        None,
        description="Names of the array's entries in order, for messages whose name array is empty (or that have "
        "none); `joints` are picked from them by name. null: an empty name array is a message lacking every joint.",
    )
    components: tuple[str, ...] | None = Field(
        None, description="Attribute paths of scalar components (e.g. point.x, point.y); instead of path + joints."
    )
    time_base: TimeBase = Field(
        "header",
        description="Timestamp used: header (header.stamp), log (the bag's log time) or header_shifted (header.stamp "
        "moved onto the log clock by the smallest log-minus-header offset: stamps in simulation time, log in wall "
        "time, no /clock; spacing from the header, origin from the log).",
    )
    resample: ResampleRule = Field(
        description="linear (positions), causal_linear (velocities: no look-past the tick), zero_order_hold (for the "
        "action: the command active at the tick, e.g. a trajectory point), last_value (commands: latest within the "
        "control period)."
    )
    unit: str = Field(description="Physical unit of the components, recorded in the dataset metadata.")
    latched: bool = Field(
        False,
        description="Published only when the value changes (like a goal): held indefinitely, no staleness check.",
    )
    wrap_joints: tuple[str, ...] = Field(
        (), description="Joints whose angle is wrapped to [-π, π) after resampling (continuous joints)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> FieldMapping:
        if (self.path is None) == (self.components is None):
            raise ValueError("give either path (with joints) or components, not both or neither")
        if self.path is not None and not self.joints:
            raise ValueError("path needs the joint names it selects (joints)")
        if self.latched and self.resample != "zero_order_hold":
            raise ValueError("a latched field can only be resampled with zero_order_hold")
        stamped_command = self.msgtype == "geometry_msgs/msg/TwistStamped"  # a command with a header
        if (
            self.components is not None
            and self.time_base != "log"
            and self.resample == "last_value"
            and not stamped_command
        ):
            raise ValueError("last_value applies to commands, which carry no header: use time_base: log")
        trajectory = self.msgtype == "trajectory_msgs/msg/JointTrajectory"
        if trajectory and (self.names_path != "joint_names" or self.resample != "zero_order_hold"):
            raise ValueError("a JointTrajectory is read with names_path: joint_names and resample: zero_order_hold")
        if self.joint_order is not None and not set(self.joints or ()) <= set(self.joint_order):
            raise ValueError(f"joints {list(self.joints or ())} are not all in joint_order {list(self.joint_order)}")
        unknown = set(self.wrap_joints) - set(self.joints or ())
        if unknown:
            raise ValueError(f"wrap_joints {sorted(unknown)} are not among joints {list(self.joints or ())}")
        return self

    @property
    def component_names(self) -> tuple[str, ...]:
        """Names of the components: joint names, or the last segment of each component path.

        Where two paths share a last segment (``linear.x`` and ``angular.x``), the whole paths, dots as ``_``.
        """
        if self.joints is not None:
            return self.joints
        paths = self.components or ()
        last = tuple(path.rsplit(".", 1)[-1] for path in paths)
        return last if len(set(last)) == len(last) else tuple(path.replace(".", "_") for path in paths)


def _default_joints() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The default env's joints and its continuous ones, read from its URDF (no joint is named here)."""
    specs = load_robot_description(ReacherConfig().urdf).joints
    return tuple(spec.name for spec in specs), tuple(spec.name for spec in specs if spec.continuous)


def _default_observations() -> dict[str, FieldMapping]:
    joints, continuous = _default_joints()
    state = {"topic": "/joint_states", "msgtype": "sensor_msgs/msg/JointState", "joints": joints, "resample": "linear"}
    return {
        "joint_position": FieldMapping.model_validate(
            {**state, "path": "position", "unit": "rad", "wrap_joints": continuous}
        ),
        "joint_velocity": FieldMapping.model_validate(
            {**state, "path": "velocity", "unit": "rad/s", "resample": "causal_linear"}
        ),
        "goal_position": FieldMapping(
            topic="/goal",
            msgtype="geometry_msgs/msg/PointStamped",
            components=("point.x", "point.y"),
            resample="zero_order_hold",
            latched=True,
            unit="m",
        ),
    }


def _default_action() -> dict[str, FieldMapping]:
    return {
        "joint_effort": FieldMapping(
            topic="/joint_commands",
            msgtype="std_msgs/msg/Float64MultiArray",
            path="data",
            joints=_default_joints()[0],
            names_path=None,
            time_base="log",
            resample="last_value",
            unit="N·m",
        )
    }


class EpisodeRules(BaseModel):
    """How the continuous log is cut into episodes and where they end."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    segment_by: Literal["markers", "file", "gaps", "idle"] = Field(
        "markers",
        description="markers: start/end markers (a bag without any falls back to goal changes); file: one episode "
        "per bag (or .mcap); gaps: a new episode after every command silence longer than max_gap_s; idle: episodes "
        "are the commands between stretches of at least idle_s with an unchanged command.",
    )
    idle_s: float = Field(2.0, gt=0.0, description="segment_by idle: an unchanged command this long is idle.")
    marker_topic: str | None = Field(
        "/episode", description="std_msgs/msg/String JSON markers {event: start|end}; null: use the fall-backs."
    )
    goal_field: str = Field(
        "goal_position", description="Fall-back when a bag has no markers: a change of this field starts an episode."
    )
    max_gap_s: float = Field(
        0.1, gt=0.0, description="A required topic silent for longer than this truncates the episode there."
    )
    time_limit_steps: int = Field(200, gt=0, description="Episodes are truncated after this many control steps.")
    estop_topic: str | None = Field(
        None, description="Optional std_msgs/msg/Bool e-stop topic; true truncates the episode at that tick."
    )


class ReachReward(BaseModel):
    """The built-in reach rule: reward 1 and termination when the hand is within radius of the goal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["reach"] = Field("reach", description="The rule; reach is the built-in one.")
    radius: float = Field(0.05, gt=0.0, description="Success radius in m.")
    joint_field: str = Field("joint_position", description="Field with the joint angles fed to forward kinematics.")
    goal_field: str = Field("goal_position", description="Field with the goal (x, y) in the base frame.")


class NoReward(BaseModel):
    """No task signal (demonstrations for BC / IQL-style learning): reward 0 everywhere, no terminations.

    The dataset records it (``reward_rule: none``), and ``train`` refuses value-based methods on it unless told.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["none"] = Field(description="The rule.")


class TopicSuccess(BaseModel):
    """Success (reward 1 and termination) at the first tick at or after a success message on a topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["success_topic"] = Field(description="The rule.")
    topic: str = Field(description="Topic of std_msgs/msg/Bool (true = success) or std_msgs/msg/String messages.")
    msgtype: Literal["std_msgs/msg/Bool", "std_msgs/msg/String"] = Field(description="Its message type.")
    value: str = Field("success", description="For String: the data that means success (other data is ignored).")


class EndMarkerSuccess(BaseModel):
    """Success at an episode's last step when its end marker's ``reason`` says so (markers segmentation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["end_marker"] = Field(description="The rule.")
    success_reasons: tuple[str, ...] = Field(
        ("reached", "success"), description="End-marker `reason` values that mean success."
    )


class TwistToJointVelocity(BaseModel):
    """End-effector twist commands (MoveIt Servo, a spacemouse) turned into the profile's joint velocity targets.

    At every control tick k, with the joint positions q_k of ``joint_field`` and the logged twist
    components v_k (the rows of the link's geometric Jacobian J = [∂p/∂q; J_ω] that the action
    mapping's ``components`` name), the joint velocity target is the damped least-squares solution

        q̇_k = Jᵀ (J Jᵀ + λ² I)⁻¹ v_k,

    the smallest-norm q̇ whose end-effector twist is v_k (up to the damping λ near singularities).
    Twist components the mapping does not name are left free, not held at zero. The twist is read
    in the profile's base frame (MoveIt Servo's planning frame); its linear part is the velocity
    of the link frame's origin.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    link: str | None = Field(None, description="The link the twist moves; null: the profile's end effector.")
    joint_field: str = Field("joint_position", description="Observation field with the joint positions (rad or m).")
    damping: float = Field(0.01, ge=0.0, description="λ of the damped least squares (m/s; 0: the pseudo-inverse).")


class HindsightGoal(BaseModel):
    """For logs that carry no goal (teleoperation demonstrations): each episode's goal is where its end effector ends.

    Every step's goal is g = FK(q_T), the end effector's position (base frame) at the episode's last
    tick: the "final" strategy of hindsight relabelling, which turns a demonstration of reaching
    somewhere into a demonstration of reaching that goal. The field is appended after the logged
    observation fields, where a profile's env observes its goal; with the reach rule the episode
    terminates at the first tick within the success radius of it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field("goal_position", description="Name of the goal field (components x, y, z), not logged.")
    joint_field: str = Field("joint_position", description="Observation field with the joint positions for FK.")


RewardRule = Annotated[
    ReachReward | NoReward | TopicSuccess | EndMarkerSuccess, Field(discriminator="kind")
]  # a rule per kind; episodes.REWARD_RULES computes each (a profile-driven reach slots in as one more kind)


class IngestConfig(BaseModel):
    """Everything ``symgate ingest`` needs to turn bags into a Minari dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    control_hz: float = Field(50.0, gt=0.0, description="Control rate; dataset step k is control tick k.")
    env_id: str = Field(CONTINUOUS_ENV_ID, description="Gymnasium id of the matching env, recorded as eval_env_spec.")
    robot: str | None = Field(
        None,
        description="Robot profile (name under deploy/robots/ or robot.yaml path) whose env (symgate/ArmReach-v0) "
        "and forward kinematics the dataset uses; null: the reacher env and `env` below.",
    )
    env: ReacherConfig = Field(
        default_factory=ReacherConfig, description="Config of that env (robot description, spaces, evaluation)."
    )
    observations: dict[str, FieldMapping] = Field(
        default_factory=_default_observations, description="Observation fields, in observation-vector order."
    )
    action: dict[str, FieldMapping] = Field(
        default_factory=_default_action, description="The action field (exactly one)."
    )
    episodes: EpisodeRules = Field(default_factory=EpisodeRules, description="Segmentation and truncation.")
    reward: RewardRule = Field(default_factory=ReachReward, description="Reward and termination rule (by kind).")
    max_clock_skew_s: float = Field(
        1.0, gt=0.0, description="header.stamp further than this from its usual offset to log time is a clock jump."
    )
    hindsight_goal: HindsightGoal | None = Field(
        None, description="The logs carry no goal: each episode's goal is its final end-effector position."
    )
    twist: TwistToJointVelocity | None = Field(
        None,
        description="The action topic carries end-effector twists (Twist/TwistStamped) that become the profile's "
        "joint velocity targets; null: the action topic carries the joint targets themselves.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> IngestConfig:
        if len(self.action) != 1:
            raise ValueError(f"action: exactly one action field is supported, got {list(self.action)}")
        rule_fields = (self.reward.joint_field, self.reward.goal_field) if isinstance(self.reward, ReachReward) else ()
        for name in (*rule_fields, self.episodes.goal_field):
            if name not in self.observation_fields:
                raise ValueError(f"field {name!r} is used by a rule but is not an observation field")
        if self.hindsight_goal is not None:
            self._check_hindsight_goal(self.hindsight_goal)
        source = "env.control_hz" if self.robot is None else f"the control_hz of robot {self.robot!r}"
        env_hz = load_profile(self.robot).profile.control_hz if self.robot is not None else self.env.control_hz
        if abs(self.control_hz - env_hz) > 1e-9:
            raise ValueError(f"control_hz={self.control_hz} differs from {source}={env_hz}")
        if self.robot is not None and self.env_id != ARM_ENV_ID:
            raise ValueError(f"env_id={self.env_id!r}: a robot profile's env is {ARM_ENV_ID}")
        if self.twist is not None:
            self._check_twist(self.twist)
        return self

    def _check_hindsight_goal(self, goal: HindsightGoal) -> None:
        if self.robot is None:
            raise ValueError("hindsight_goal: the end effector's forward kinematics need a robot profile (robot)")
        if goal.field in self.observations:
            raise ValueError(f"hindsight_goal: field {goal.field!r} is also mapped from a topic in observations")
        if goal.joint_field not in self.observations:
            raise ValueError(f"hindsight_goal: joint_field {goal.joint_field!r} is not an observation field")

    def _check_twist(self, twist: TwistToJointVelocity) -> None:
        mapping = self.action_mapping
        if self.robot is None:
            raise ValueError("twist: converting twists to joint velocities needs a robot profile (robot)")
        robot = load_profile(self.robot)
        profile = robot.profile
        if twist.link is not None and twist.link not in robot.kinematics.links:
            raise ValueError(
                f"twist: link {twist.link!r} is not one the profile evaluates {list(robot.kinematics.links)}"
            )
        if profile.action.interface != "velocity":
            raise ValueError(f"twist: robot {self.robot!r} takes {profile.action.interface} targets, not velocity")
        if mapping.msgtype not in TWIST_TYPES:
            raise ValueError(f"twist: the action topic's msgtype must be one of {list(TWIST_TYPES)}")
        prefix = twist_prefix(mapping.msgtype)
        unknown = [c for c in mapping.components or () if c.removeprefix(prefix) not in TWIST_COMPONENTS]
        if mapping.components is None or unknown or not all(c.startswith(prefix) for c in mapping.components):
            allowed = [prefix + c for c in TWIST_COMPONENTS]
            raise ValueError(f"twist: the action's components must be among {allowed}, got {unknown}")
        if twist.joint_field not in self.observations:
            raise ValueError(f"twist: joint_field {twist.joint_field!r} is not an observation field")
        if self.action_name != profile.action_field:
            raise ValueError(f"twist: the action field must be named {profile.action_field!r} (the profile's)")

    @property
    def twist_rows(self) -> list[int]:
        """Rows of the geometric Jacobian [v; ω] that the twist action's components name, in their order."""
        prefix = twist_prefix(self.action_mapping.msgtype)
        return [TWIST_COMPONENTS.index(c.removeprefix(prefix)) for c in self.action_mapping.components or ()]

    @property
    def observation_fields(self) -> tuple[str, ...]:
        """Names of the observation fields in vector order: the mapped ones, then a hindsight goal."""
        hindsight = () if self.hindsight_goal is None else (self.hindsight_goal.field,)
        return (*self.observations, *hindsight)

    @property
    def action_name(self) -> str:
        """Name of the action field."""
        return next(iter(self.action))

    @property
    def action_mapping(self) -> FieldMapping:
        """The action field's mapping."""
        return self.action[self.action_name]

    def sha256(self) -> str:
        """Hash of the canonical JSON form of this config (recorded in the dataset)."""
        return sha256_json(self.model_dump(mode="json"))


def config_for_robot(robot: str) -> IngestConfig:
    """The default mapping of a robot profile's bags: its topics, joints by name, 3-D goal, reach rule.

    ``/joint_states`` gives ``joint_position`` (continuous joints wrapped) and ``joint_velocity``, the
    goal topic ``goal_position.{x,y,z}``, and the command topic (a ros2_control command array in the
    profile's joint order) the profile's action field; the reach radius and time limit come from the task.

    Args:
        robot: Profile name or path.

    Returns:
        The config (``robot`` set, ``env_id`` the generic reach env).
    """
    loaded = load_profile(robot)
    profile = loaded.profile
    joints = profile.joints
    state = {"topic": profile.ros.joint_states, "msgtype": "sensor_msgs/msg/JointState", "joints": joints}
    continuous = tuple(limit.name for limit in loaded.limits if limit.continuous)
    units = {"effort": "N·m", "velocity": "rad/s", "position": "rad"}
    return IngestConfig(
        control_hz=float(profile.control_hz),
        env_id=ARM_ENV_ID,
        robot=robot,
        observations={
            "joint_position": FieldMapping.model_validate(
                {**state, "path": "position", "unit": "rad", "resample": "linear", "wrap_joints": continuous}
            ),
            "joint_velocity": FieldMapping.model_validate(
                {**state, "path": "velocity", "unit": "rad/s", "resample": "causal_linear"}
            ),
            "goal_position": FieldMapping(
                topic=profile.ros.goal,
                msgtype="geometry_msgs/msg/PointStamped",
                components=("point.x", "point.y", "point.z"),
                resample="zero_order_hold",
                latched=True,
                unit="m",
            ),
        },
        action={
            profile.action_field: FieldMapping(
                topic=profile.ros.joint_commands,
                msgtype="std_msgs/msg/Float64MultiArray",
                path="data",
                joints=joints,
                names_path=None,
                time_base="log",
                resample="last_value",
                unit=units[profile.action.interface],
            )
        },
        episodes=EpisodeRules(marker_topic=profile.ros.episode_events, time_limit_steps=profile.task.max_episode_steps),
        reward=ReachReward(radius=profile.task.success_radius),
    )
