"""Robot profiles: the one robot-specific input of symgate (``deploy/robots/<name>/robot.yaml``).

A profile names the URDF (a path, or a file shipped with ``pybullet_data``), the base link, the
controlled joints, the action interface and its limits, the control and physics rates, the reach
task, the contexts (rotations about the base z axis), domain randomisation, the ROS 2 topics and
the symmetry spec. Every stage that needs robot knowledge reads it from here and the URDF.

:func:`load_profile` resolves ``NAME`` (a folder under ``deploy/robots/``) or a YAML path and
checks the profile against its URDF; every error names the file, the field and the problem:

>>> profile = load_profile("kuka_iiwa")
>>> profile.joints[0]
'lbr_iiwa_joint_1'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pybullet_data
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sim.config import DomainRandomization, FloatRange
from sim.contexts import ContextSets
from sim.robots.urdf import ChainStep, Kinematics, TreeStep, UrdfError, UrdfJoint, UrdfModel, load_urdf

#: Where named profiles live: ``deploy/robots/<name>/robot.yaml``.
ROBOTS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "robots"
PROFILE_FILE = "robot.yaml"
#: The profile every command uses when ``--robot`` is not given.
DEFAULT_ROBOT = "reacher"

ActionInterfaceName = Literal["effort", "velocity", "position"]
#: Action field name of each interface (``joint_effort.<joint>`` …); never an observation field name.
ACTION_FIELDS: dict[str, str] = {
    "effort": "joint_effort",
    "velocity": "joint_velocity_target",
    "position": "joint_position_target",
}


class RobotProfileError(ValueError):
    """A robot profile is missing, malformed or disagrees with its URDF; the message names file and field."""


class UrdfSource(BaseModel):
    """Where the URDF is: a path (relative to the profile's folder) or a file of ``pybullet_data``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = Field(None, description="URDF path; relative paths are relative to the profile's folder.")
    pybullet_data: str | None = Field(None, description="A URDF shipped with pybullet_data, e.g. kuka_iiwa/model.urdf.")

    @model_validator(mode="after")
    def _exactly_one(self) -> UrdfSource:
        if (self.path is None) == (self.pybullet_data is None):
            raise ValueError("give exactly one of path or pybullet_data")
        return self


class JointLimits(BaseModel):
    """Limits of one controlled joint that replace the URDF's; each must lie within the URDF's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lower: float | None = Field(None, description="Lower position limit (rad or m); null: the URDF's.")
    upper: float | None = Field(None, description="Upper position limit (rad or m); null: the URDF's.")
    velocity: float | None = Field(None, gt=0.0, description="Velocity limit (rad/s or m/s); null: the URDF's.")
    effort: float | None = Field(None, gt=0.0, description="Effort limit (N·m or N); null: the URDF's.")


class ActionSpec(BaseModel):
    """What the policy commands each control period, and its limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interface: ActionInterfaceName = Field(
        description="Joint targets the policy sends: effort (torques), velocity (rad/s) or position (rad)."
    )
    limits: dict[str, JointLimits] = Field(
        default_factory=dict, description="Per-joint limit overrides by joint name; others come from the URDF."
    )


class GoalRegion(BaseModel):
    """The reach goal in the base frame: bearing = context angle, radius and height drawn per episode."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    radius: FloatRange = Field(description="Range of the goal's horizontal distance from the base z axis, m.")
    height: tuple[float, float] = Field(description="Range of the goal's height above the base frame, m.")

    @model_validator(mode="after")
    def _ordered(self) -> GoalRegion:
        if self.height[0] > self.height[1]:
            raise ValueError(f"height: need low <= high, got {self.height}")
        return self


class ReachTask(BaseModel):
    """Reach: bring the end-effector link's frame within ``success_radius`` of the goal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["reach"] = Field("reach", description="The task; only reach exists.")
    end_effector: str = Field(description="The link whose frame origin must reach the goal.")
    feature_links: tuple[str, ...] = Field(
        (), description="Further links whose goal-relative positions the policy sees (besides the end effector)."
    )
    goal: GoalRegion = Field(description="Where goals lie.")
    success_radius: float = Field(0.05, gt=0.0, description="Success when the end effector is this close, m.")
    distance_shaping: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Weight w of progress shaping: r = (1-w)·success + w·(d_prev - d)/d_start; 0 = sparse reward.",
    )
    max_episode_steps: int = Field(200, gt=0, description="Time limit in control steps; the episode is truncated.")


class StartPose(BaseModel):
    """The start pose; the symmetry joint's angle is relative to the goal bearing in relative mode."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    joint_position_deg: dict[str, float] = Field(
        default_factory=dict, description="Start position per controlled joint (deg, or m if prismatic); others 0."
    )
    mode: Literal["relative", "fixed"] = Field(
        "relative", description="relative: the symmetry joint starts at bearing + its value (exact rotation); fixed."
    )
    noise_deg: float = Field(2.0, ge=0.0, description="Half-width of uniform noise on every start joint angle, deg.")


class RobotTopics(BaseModel):
    """ROS 2 topics the robot logs and the policy node listens and commands on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    joint_states: str = Field("/joint_states", description="sensor_msgs/msg/JointState (the follower's state).")
    goal: str = Field("/goal", description="geometry_msgs/msg/PointStamped, the goal in the base frame.")
    joint_commands: str = Field(
        "/joint_commands", description="std_msgs/msg/Float64MultiArray of the commanded targets, logged."
    )
    episode_events: str = Field("/episode", description="std_msgs/msg/String JSON start/end markers.")
    controller_commands: str = Field(
        "/effort_controller/commands", description="The ros2_control controller's command topic the node writes."
    )


class ExpertGains(BaseModel):
    """Damped-least-squares IK expert: Δq = Jᵀ(JJᵀ + λ²I)⁻¹(g − p) on the end effector's position Jacobian."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    damping: float = Field(0.05, gt=0.0, description="λ of the damped least squares, m.")
    gain: float = Field(
        4.0, gt=0.0, description="velocity: q̇ = gain·Δq (1/s); position: target = q + gain·Δq·dt; effort: kp."
    )
    kd: float = Field(2.0, ge=0.0, description="effort only: damping on joint velocity, τ = kp·Δq − kd·q̇.")
    max_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="Commands are scaled to at most this fraction of the action limits."
    )
    epsilon: float = Field(0.6, ge=0.0, le=1.0, description="Suboptimal data: probability of a random action.")
    noise_fraction: float = Field(0.0, ge=0.0, description="Suboptimal data: Gaussian noise std, fraction of limits.")
    asymmetric_bias: float = Field(
        0.4, ge=0.0, description="Asymmetric expert: bearing-dependent bias, fraction of the action limits."
    )


class RobotProfile(BaseModel):
    """A robot arm and its reach task: everything symgate needs to know about one robot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Profile name (its folder under deploy/robots/).")
    description: str = Field("", description="One line for people: which arm, which task.")
    urdf: UrdfSource = Field(description="The robot description.")
    base_link: str = Field(description="The link whose frame observations and goals are expressed in.")
    joints: tuple[str, ...] = Field(description="Controlled joints by name, in action order; all others are held.")
    held_joints: dict[str, float] = Field(
        default_factory=dict, description="Positions of uncontrolled movable joints (rad or m); unlisted: 0."
    )
    symmetry_joint: str | None = Field(
        None, description="The joint turning about base z that the rotation shifts; null: the first such joint."
    )
    action: ActionSpec = Field(description="Action interface and limits.")
    control_hz: int = Field(gt=0, description="Rate at which the policy acts, Hz; actions are held in between.")
    physics_hz: int = Field(gt=0, description="Physics rate, Hz; an integer multiple of control_hz.")
    self_collision: bool = Field(False, description="Simulate self-collision (PyBullet leaves it off otherwise).")
    task: ReachTask = Field(description="The reach task.")
    start: StartPose = Field(default_factory=StartPose, description="The start pose.")
    contexts: ContextSets = Field(default_factory=ContextSets, description="Train / test / validation context sets.")
    reset_context_set: Literal["train", "test", "validation"] = Field(
        "train", description="Set the context is drawn from at reset without options={'context': θ}."
    )
    randomization: DomainRandomization = Field(
        default_factory=DomainRandomization, description="Domain randomisation (off by default; the gate adds it)."
    )
    ros: RobotTopics = Field(default_factory=RobotTopics, description="ROS 2 topics.")
    symmetry: Literal["derived"] | Path | dict[str, Any] = Field(
        "derived",
        description="derived (yaw joint angle_shift, goal rotate2d, rest invariant), a spec file path, or inline.",
    )
    expert: ExpertGains = Field(default_factory=ExpertGains, description="Behaviour expert gains and noise.")

    @model_validator(mode="after")
    def _rates_divide(self) -> RobotProfile:
        if self.physics_hz % self.control_hz:
            raise ValueError(f"physics_hz={self.physics_hz} is not an integer multiple of control_hz={self.control_hz}")
        if len(set(self.joints)) != len(self.joints) or not self.joints:
            raise ValueError(f"joints: need unique names, got {list(self.joints)}")
        return self

    @property
    def action_repeat(self) -> int:
        """Physics steps per control step."""
        return self.physics_hz // self.control_hz

    @property
    def action_field(self) -> str:
        """The action field name (``joint_effort``, ``joint_velocity_target`` or ``joint_position_target``)."""
        return ACTION_FIELDS[self.action.interface]


@dataclass(frozen=True)
class JointLimit:
    """The effective limits of one controlled joint (URDF, possibly narrowed by the profile)."""

    name: str
    angular: bool
    continuous: bool
    lower: float
    upper: float
    velocity: float
    effort: float
    damping: float
    friction: float


class Robot:
    """A validated profile bound to its URDF: joint limits, kinematics, observation and action names.

    Args:
        profile: The profile.
        source: The profile file (for error messages and relative URDF paths).

    Raises:
        RobotProfileError: If the profile disagrees with its URDF.
    """

    def __init__(self, profile: RobotProfile, source: Path) -> None:
        self.profile = profile
        self.source = source
        self.urdf_path = _resolve_urdf(profile.urdf, source)
        try:
            self.urdf: UrdfModel = load_urdf(self.urdf_path)
        except UrdfError as error:
            raise RobotProfileError(f"{source}: urdf: {error}") from error
        self.limits = self._check()
        self.kinematics = Kinematics(
            {link: self.chain(link) for link in (profile.task.end_effector, *profile.task.feature_links)},
            len(profile.joints),
        )

    def _error(self, field: str, problem: str) -> RobotProfileError:
        return RobotProfileError(f"{self.source}: {field}: {problem}")

    def _check(self) -> tuple[JointLimit, ...]:
        p, urdf = self.profile, self.urdf
        if p.base_link not in urdf.links:
            raise self._error(
                "base_link", f"no link {p.base_link!r} in {self.urdf_path.name}; links: {list(urdf.links)}"
            )
        for field, link in (
            ("task.end_effector", p.task.end_effector),
            *(("task.feature_links", x) for x in p.task.feature_links),
        ):
            if link not in urdf.links:
                raise self._error(field, f"no link {link!r} in {self.urdf_path.name}; links: {list(urdf.links)}")
            try:
                urdf.path_joints(p.base_link, link)
            except UrdfError as error:
                raise self._error(field, str(error)) from error
        movable = [name for name, joint in urdf.joints.items() if joint.movable]
        for field, names in (
            ("joints", p.joints),
            ("held_joints", tuple(p.held_joints)),
            ("action.limits", tuple(p.action.limits)),
            ("start.joint_position_deg", tuple(p.start.joint_position_deg)),
        ):
            for name in names:
                if name not in urdf.joints or not urdf.joints[name].movable:
                    raise self._error(
                        field,
                        f"joint {name!r} is not a movable joint of {self.urdf_path.name}; movable joints: {movable}",
                    )
        for name in p.held_joints:
            if name in p.joints:
                raise self._error("held_joints", f"joint {name!r} is controlled; it cannot also be held")
        for name in (*p.action.limits, *p.start.joint_position_deg):
            if name not in p.joints:
                raise self._error(
                    "action.limits" if name in p.action.limits else "start.joint_position_deg",
                    f"joint {name!r} is not in joints",
                )
        limits = []
        for name in p.joints:
            joint = urdf.joints[name]
            limits.append(self._limit(joint, p.action.limits.get(name, JointLimits())))
        if p.symmetry_joint is not None and p.symmetry_joint not in p.joints:
            raise self._error("symmetry_joint", f"joint {p.symmetry_joint!r} is not in joints")
        return tuple(limits)

    def _limit(self, joint: UrdfJoint, override: JointLimits) -> JointLimit:
        field = f"action.limits.{joint.name}"
        for key, value, low, high in (
            ("lower", override.lower, joint.lower, joint.upper),
            ("upper", override.upper, joint.lower, joint.upper),
        ):
            if value is not None and not low <= value <= high:
                raise self._error(f"{field}.{key}", f"{value} lies outside the URDF's [{low}, {high}]")
        for key, value, urdf_value in (
            ("velocity", override.velocity, joint.velocity),
            ("effort", override.effort, joint.effort),
        ):
            if value is not None and value > urdf_value:
                raise self._error(f"{field}.{key}", f"{value} exceeds the URDF's limit {urdf_value}")
        lower = joint.lower if override.lower is None else override.lower
        upper = joint.upper if override.upper is None else override.upper
        if lower > upper:
            raise self._error(field, f"lower {lower} > upper {upper}")
        limit = JointLimit(
            name=joint.name,
            angular=joint.angular,
            continuous=joint.type == "continuous",
            lower=lower,
            upper=upper,
            velocity=joint.velocity if override.velocity is None else override.velocity,
            effort=joint.effort if override.effort is None else override.effort,
            damping=joint.damping,
            friction=joint.friction,
        )
        interface = self.profile.action.interface
        needed = {
            "effort": limit.effort,
            "velocity": limit.velocity,
            "position": min(limit.upper - limit.lower, math.inf),
        }[interface]
        if not math.isfinite(needed) and interface != "position":
            raise self._error(field, f"{interface} control needs a finite {interface} limit (URDF <limit> or override)")
        return limit

    # ----------------------------------------------------------------------------- derived facts
    @property
    def name(self) -> str:
        """The profile name."""
        return self.profile.name

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Controlled joints in action order."""
        return self.profile.joints

    @property
    def observation_names(self) -> tuple[str, ...]:
        """The generic env's observation component names."""
        joints = self.joint_names
        return (
            *(f"joint_position.{j}" for j in joints),
            *(f"joint_velocity.{j}" for j in joints),
            "goal_position.x",
            "goal_position.y",
            "goal_position.z",
        )

    @property
    def action_names(self) -> tuple[str, ...]:
        """Action component names, ``<action field>.<joint>``."""
        return tuple(f"{self.profile.action_field}.{j}" for j in self.joint_names)

    def action_limits(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Lower and upper bounds of the action vector in its interface's unit."""
        interface = self.profile.action.interface
        if interface == "effort":
            high = np.array([limit.effort for limit in self.limits])
            return -high, high
        if interface == "velocity":
            high = np.array([limit.velocity for limit in self.limits])
            return -high, high
        return np.array([limit.lower for limit in self.limits]), np.array([limit.upper for limit in self.limits])

    def chain(self, link: str) -> tuple[ChainStep, ...]:
        """The chain from the base link to ``link``, controlled joints free, held joints frozen."""
        return self.urdf.chain(self.profile.base_link, link, self.profile.joints, self.profile.held_joints)

    @property
    def feature_links(self) -> tuple[str, ...]:
        """The links whose goal-relative points the policy sees: the end effector, then ``task.feature_links``."""
        return (self.profile.task.end_effector, *self.profile.task.feature_links)

    def tree(self) -> tuple[tuple[TreeStep, ...], tuple[int, ...]]:
        """The kinematic tree of :attr:`feature_links` (see :meth:`UrdfModel.tree`)."""
        return self.urdf.tree(self.profile.base_link, self.feature_links, self.profile.joints, self.profile.held_joints)

    @cached_property
    def constant_height_links(self) -> tuple[str, ...]:
        """Feature links whose height above the goal never changes (no joint moves them in z, goal height fixed).

        Their ``z`` feature would be a constant; the features leave it out (a planar arm's every point).
        """
        height = self.profile.task.goal.height
        if height[0] != height[1]:
            return ()
        rng = np.random.default_rng(0)
        low = np.array([max(limit.lower, -math.pi) for limit in self.limits])
        high = np.array([min(limit.upper, math.pi) for limit in self.limits])
        samples = [rng.uniform(low, high) for _ in range(4)]
        return tuple(
            link
            for link in self.feature_links
            if all(np.abs(self.kinematics.jacobian(link, q)[1][2]).max() < 1e-12 for q in samples)
        )

    @cached_property
    def symmetry_joint(self) -> str:
        """The controlled joint that turns about the base z axis through the base origin (the context's rotation).

        Raises:
            RobotProfileError: If no controlled joint does, or the named one does not.
        """
        candidates = [self.profile.symmetry_joint] if self.profile.symmetry_joint else list(self.joint_names)
        for name in candidates:
            index = self.joint_names.index(name)
            joint = self.urdf.joints[name]
            if not joint.angular:
                continue
            # The joint's axis and origin in the base frame, with no controlled joint ahead of it.
            steps = self.urdf.chain(self.profile.base_link, joint.child, self.profile.joints, self.profile.held_joints)
            frame = np.eye(4)
            upstream_free = False
            for step in steps:
                frame = frame @ step.origin
                if step.joint is not None and step.joint != index:
                    upstream_free = True
                if step.joint == index:
                    break
            axis = frame[:3, :3] @ joint.axis
            origin = frame[:3, 3]
            if (
                not upstream_free
                and np.allclose(axis, (0.0, 0.0, 1.0), atol=1e-9)
                and np.allclose(origin[:2], 0.0, atol=1e-9)
            ):
                return name
        raise self._error(
            "symmetry_joint",
            "no controlled joint turns about the base z axis (+z, through the base origin) ahead of the others; "
            "the rotation symmetry needs one",
        )

    def symmetry_spec(self) -> dict[str, Any]:
        """The symmetry spec (``models.symmetry.SymmetrySpec`` fields): written in the profile, or derived.

        Derived: the symmetry joint's position gets ``angle_shift``, the goal's (x, y) ``rotate2d``,
        everything else is invariant (position targets of the symmetry joint shift too).
        """
        spec = self.profile.symmetry
        if isinstance(spec, dict):
            return spec
        if isinstance(spec, Path):
            path = spec if spec.is_absolute() else self.source.parent / spec
            try:
                loaded = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError) as error:
                raise self._error("symmetry", f"cannot read {path}: {error}") from error
            if not isinstance(loaded, dict):
                raise self._error("symmetry", f"{path} does not hold a mapping")
            return loaded
        yaw = self.symmetry_joint
        rest = [j for j in self.joint_names if j != yaw]
        joint_rules: list[dict[str, Any]] = [{"transform": "angle_shift", "components": [yaw]}]
        if rest:
            joint_rules.append({"transform": "invariant", "components": rest})
        action: Any = "invariant" if self.profile.action.interface != "position" else joint_rules
        return {
            "groups": ["rotation"],
            "rotation": {"sampling": "cyclic", "order": 4},
            "observation": {
                "joint_position": joint_rules,
                "joint_velocity": "invariant",
                "goal_position": [
                    {"transform": "rotate2d", "components": ["x", "y"]},
                    {"transform": "invariant", "components": ["z"]},
                ],
            },
            "action": {self.profile.action_field: action},
        }

    def forward_kinematics(
        self, joint_position: NDArray[np.floating]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Feature-link points and the end effector's position in the base frame, for joints ``(..., J)``.

        Returns:
            ``(points, end_effector)`` of shapes ``(..., L, 3)`` (:attr:`feature_links` order) and ``(..., 3)``.
        """
        q = np.asarray(joint_position, dtype=np.float64)
        flat = q.reshape(-1, q.shape[-1])
        points = np.stack([self.kinematics.positions(row) for row in flat]).reshape(*q.shape[:-1], -1, 3)
        return points, points[..., 0, :]

    def start_position(self, bearing: float) -> NDArray[np.float64]:
        """The start joint vector for a goal bearing (rad), before noise."""
        start = np.zeros(len(self.joint_names))
        for name, value in self.profile.start.joint_position_deg.items():
            index = self.joint_names.index(name)
            start[index] = math.radians(value) if self.limits[index].angular else value
        if self.profile.start.mode == "relative":
            start[self.joint_names.index(self.symmetry_joint)] += bearing
        return start


def _resolve_urdf(source: UrdfSource, profile_file: Path) -> Path:
    if source.pybullet_data is not None:
        return Path(pybullet_data.getDataPath()) / source.pybullet_data
    assert source.path is not None
    return source.path if source.path.is_absolute() else profile_file.parent / source.path


def profile_path(robot: str | Path) -> Path:
    """The YAML file of ``robot``: a profile name under ``deploy/robots/`` or a path to a YAML file or folder."""
    path = Path(robot)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    if path.is_dir():
        return path / PROFILE_FILE
    return ROBOTS_DIR / str(robot) / PROFILE_FILE


def list_profiles() -> list[str]:
    """Names of the profiles under ``deploy/robots/``."""
    return sorted(p.parent.name for p in ROBOTS_DIR.glob(f"*/{PROFILE_FILE}"))


def _format_validation(source: Path, error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        problems.append(f"{source}: {field}: {item['msg']}")
    return "\n".join(problems)


def load_profile_dict(data: Mapping[str, Any], source: Path) -> Robot:
    """Validate a profile mapping (as read from ``source``) and bind it to its URDF."""
    try:
        profile = RobotProfile.model_validate(dict(data))
    except ValidationError as error:
        raise RobotProfileError(_format_validation(source, error)) from error
    return Robot(profile, source)


_CACHE: dict[tuple[Path, float], Robot] = {}


def load_profile(robot: str | Path = DEFAULT_ROBOT) -> Robot:
    """Load and validate a robot profile.

    Args:
        robot: A profile name (``deploy/robots/<name>/robot.yaml``) or a path to a profile YAML.

    Returns:
        The profile bound to its URDF.

    Raises:
        RobotProfileError: Unknown name, unreadable file, invalid field, or a disagreement with the
            URDF; the message names the file, the field and the problem.
    """
    path = profile_path(robot).resolve()
    if not path.is_file():
        known = ", ".join(list_profiles())
        raise RobotProfileError(f"{path}: no robot profile {str(robot)!r}; known profiles: {known}")
    key = (path, path.stat().st_mtime)
    if key not in _CACHE:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise RobotProfileError(f"{path}: cannot read YAML: {error}") from error
        if not isinstance(data, dict):
            raise RobotProfileError(f"{path}: (top level): a robot profile is a mapping")
        _CACHE[key] = load_profile_dict(data, path)
    return _CACHE[key]
