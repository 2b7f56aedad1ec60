"""Any serial arm's kinematics, read from its URDF: joints, links, chains and forward kinematics.

The URDF is the single source of truth for an arm. :func:`load_urdf` reads every link and joint
(origin, axis, limits, dynamics); :meth:`UrdfModel.chain` folds the path from a base link to any
link into :class:`ChainStep` s, with every joint that is not controlled frozen at its held
position; :class:`Kinematics` evaluates link-frame positions and the position Jacobian in
float64 numpy (the simulator, ingestion's reward rule and the expert use it). The network's
float32 torch twin is :class:`models.kinematics.LinkPoints`, built from the same chain steps.

Positions are those of the URDF link *frames* (PyBullet's ``worldLinkFramePosition``), not the
centres of mass (``linkWorldPosition``).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

JointType = Literal["revolute", "continuous", "prismatic", "fixed", "floating", "planar"]
#: Joint types a chain can move along (others must be fixed).
MOVABLE = ("revolute", "continuous", "prismatic")


class UrdfError(ValueError):
    """A URDF is unreadable, or a link or joint it is asked for does not exist; the message names the file."""


@dataclass(frozen=True)
class UrdfJoint:
    """One joint as declared in the URDF.

    Attributes:
        name: Joint name (the name a real robot publishes in ``sensor_msgs/JointState``).
        type: URDF joint type.
        parent: Parent link name.
        child: Child link name.
        origin: 4x4 transform from the parent link frame to the joint frame.
        axis: Unit axis in the joint frame.
        lower: Lower position limit (rad or m; ``-inf`` when continuous or absent).
        upper: Upper position limit (``+inf`` when continuous or absent).
        effort: Effort limit (N·m or N; ``inf`` when absent).
        velocity: Velocity limit (rad/s or m/s; ``inf`` when absent).
        damping: Viscous damping.
        friction: Coulomb friction.
    """

    name: str
    type: JointType
    parent: str
    child: str
    origin: NDArray[np.float64]
    axis: NDArray[np.float64]
    lower: float
    upper: float
    effort: float
    velocity: float
    damping: float
    friction: float

    @property
    def movable(self) -> bool:
        """True for revolute, continuous and prismatic joints."""
        return self.type in MOVABLE

    @property
    def angular(self) -> bool:
        """True for revolute and continuous joints (positions in rad)."""
        return self.type in ("revolute", "continuous")

    def transform(self, position: float) -> NDArray[np.float64]:
        """4x4 transform from the parent link frame to the child link frame with the joint at ``position``."""
        return self.origin @ _joint_motion(self, position)


@dataclass(frozen=True)
class ChainStep:
    """One step along a kinematic chain: a fixed transform, then (optionally) a controlled joint.

    Attributes:
        origin: 4x4 fixed transform from the previous frame (fixed and held joints folded in).
        joint: Index of the controlled joint moved after ``origin`` (into the controlled joint list),
            or None for a purely fixed step (the last step of a chain).
        axis: Unit axis of that joint in its own frame.
        prismatic: True if that joint translates along ``axis`` instead of turning about it.
    """

    origin: NDArray[np.float64]
    joint: int | None
    axis: NDArray[np.float64]
    prismatic: bool


@dataclass(frozen=True)
class TreeStep:
    """One frame of a kinematic tree that several chains share: its parent frame, a fixed transform, a joint.

    Attributes:
        parent: Index of the parent frame among the tree's steps (-1: the base frame).
        origin: 4x4 fixed transform from the parent frame (fixed and held joints folded in).
        joint: Index of the controlled joint moved after ``origin``, or None for a link's final fixed step.
        axis: Unit axis of that joint in its own frame.
        prismatic: True if that joint translates along ``axis``.
    """

    parent: int
    origin: NDArray[np.float64]
    joint: int | None
    axis: NDArray[np.float64]
    prismatic: bool


def rpy_matrix(roll: float, pitch: float, yaw: float) -> NDArray[np.float64]:
    """URDF's fixed-axis roll-pitch-yaw rotation ``Rz(yaw)·Ry(pitch)·Rx(roll)``."""
    cr, sr, cp, sp, cy, sy = (
        math.cos(roll),
        math.sin(roll),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(yaw),
        math.sin(yaw),
    )
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def _skew(axis: NDArray[np.float64]) -> NDArray[np.float64]:
    """The cross-product matrix K of ``axis`` (K·v = axis × v)."""
    return np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])


def axis_rotation(axis: NDArray[np.float64], angle: float) -> NDArray[np.float64]:
    """Rotation by ``angle`` about the unit ``axis`` (Rodrigues: I + sin·K + (1 − cos)·K²)."""
    k = _skew(axis)
    out: NDArray[np.float64] = np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)
    return out


def _joint_motion(joint: UrdfJoint, position: float) -> NDArray[np.float64]:
    """4x4 transform of a joint at ``position`` (identity for fixed joints)."""
    motion = np.eye(4)
    if joint.angular:
        motion[:3, :3] = axis_rotation(joint.axis, position)
    elif joint.type == "prismatic":
        motion[:3, 3] = joint.axis * position
    return motion


def _numbers(path: Path, where: str, text: str, count: int) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split())
    except ValueError as error:
        raise UrdfError(f"{path}: {where}: {text!r} is not {count} numbers") from error
    if len(values) != count:
        raise UrdfError(f"{path}: {where}: {text!r} is not {count} numbers")
    return values


def _attribute(path: Path, where: str, element: ET.Element | None, name: str, default: float) -> float:
    if element is None or name not in element.attrib:
        return default
    return _numbers(path, f"{where} {name}", element.attrib[name], 1)[0]


@dataclass(frozen=True)
class UrdfModel:
    """The links and joints of a URDF.

    Attributes:
        path: The file it was read from.
        name: The robot name.
        links: Every link name, in file order.
        joints: Every joint by name, in file order.
    """

    path: Path
    name: str
    links: tuple[str, ...]
    joints: Mapping[str, UrdfJoint]

    @property
    def root_link(self) -> str:
        """The link that is no joint's child."""
        children = {joint.child for joint in self.joints.values()}
        return next(link for link in self.links if link not in children)

    def joint_to(self, link: str) -> UrdfJoint | None:
        """The joint whose child is ``link`` (None for the root)."""
        return next((joint for joint in self.joints.values() if joint.child == link), None)

    def path_joints(self, base_link: str, link: str) -> list[UrdfJoint]:
        """The joints from ``base_link`` down to ``link``, base first.

        Raises:
            UrdfError: If a link is missing or ``link`` does not hang below ``base_link``.
        """
        for name in (base_link, link):
            if name not in self.links:
                raise UrdfError(f"{self.path}: no link {name!r}; the links are {list(self.links)}")
        joints: list[UrdfJoint] = []
        current = link
        while current != base_link:
            joint = self.joint_to(current)
            if joint is None:
                raise UrdfError(f"{self.path}: link {link!r} is not below base link {base_link!r}")
            joints.append(joint)
            current = joint.parent
        return joints[::-1]

    def chain(
        self, base_link: str, link: str, controlled: Sequence[str], held: Mapping[str, float] | None = None
    ) -> tuple[ChainStep, ...]:
        """The kinematic chain from ``base_link`` to ``link`` with ``controlled`` joints free.

        Args:
            base_link: The frame positions are expressed in.
            link: The link whose frame the chain ends at.
            controlled: The controlled joint names; ``ChainStep.joint`` indexes this list.
            held: Positions of the other movable joints (0 when not given).

        Returns:
            Steps whose composition is the base→link transform.
        """
        held = held or {}
        steps: list[ChainStep] = []
        pending = np.eye(4)
        for joint in self.path_joints(base_link, link):
            pending = pending @ joint.origin
            if joint.name in controlled:
                steps.append(
                    ChainStep(pending, list(controlled).index(joint.name), joint.axis, joint.type == "prismatic")
                )
                pending = np.eye(4)
            else:
                pending = pending @ _joint_motion(joint, held.get(joint.name, 0.0))
        steps.append(ChainStep(pending, None, np.zeros(3), False))
        return tuple(steps)

    def tree(
        self, base_link: str, links: Sequence[str], controlled: Sequence[str], held: Mapping[str, float] | None = None
    ) -> tuple[tuple[TreeStep, ...], tuple[int, ...]]:
        """The chains to several links as one tree, so that shared joints are evaluated once.

        Args:
            base_link: The frame positions are expressed in.
            links: The links whose frames are wanted.
            controlled: The controlled joint names; ``TreeStep.joint`` indexes this list.
            held: Positions of the other movable joints (0 when not given).

        Returns:
            The steps in evaluation order (parents first), and the step index of each link's frame.
        """
        held = held or {}
        steps: list[TreeStep] = []
        frame_of: dict[str, int] = {}
        outputs = []
        for link in links:
            parent, pending = -1, np.eye(4)
            for joint in self.path_joints(base_link, link):
                pending = pending @ joint.origin
                if joint.name in controlled:
                    if joint.name not in frame_of:
                        index = list(controlled).index(joint.name)
                        steps.append(TreeStep(parent, pending, index, joint.axis, joint.type == "prismatic"))
                        frame_of[joint.name] = len(steps) - 1
                    parent, pending = frame_of[joint.name], np.eye(4)
                else:
                    pending = pending @ _joint_motion(joint, held.get(joint.name, 0.0))
            steps.append(TreeStep(parent, pending, None, np.zeros(3), False))
            outputs.append(len(steps) - 1)
        return tuple(steps), tuple(outputs)


@cache
def load_urdf(path: Path) -> UrdfModel:
    """Read a URDF's links and joints.

    Args:
        path: The URDF file.

    Returns:
        The model.

    Raises:
        UrdfError: If the file is unreadable or malformed; the message names the file and joint.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise UrdfError(f"{path}: cannot read URDF: {error}") from error
    links = tuple(link.attrib.get("name", "") for link in root.findall("link"))
    joints: dict[str, UrdfJoint] = {}
    for element in root.findall("joint"):
        name = element.attrib.get("name", "")
        where = f"joint {name!r}"
        kind = element.attrib.get("type", "")
        if kind not in ("revolute", "continuous", "prismatic", "fixed", "floating", "planar"):
            raise UrdfError(f"{path}: {where}: unknown type {kind!r}")
        parent, child = element.find("parent"), element.find("child")
        if parent is None or child is None or "link" not in parent.attrib or "link" not in child.attrib:
            raise UrdfError(f"{path}: {where}: needs <parent link> and <child link>")
        origin_element = element.find("origin")
        xyz = _numbers(
            path,
            f"{where} <origin xyz>",
            (origin_element.attrib if origin_element is not None else {}).get("xyz", "0 0 0"),
            3,
        )
        rpy = _numbers(
            path,
            f"{where} <origin rpy>",
            (origin_element.attrib if origin_element is not None else {}).get("rpy", "0 0 0"),
            3,
        )
        origin = np.eye(4)
        origin[:3, :3] = rpy_matrix(*rpy)
        origin[:3, 3] = xyz
        axis_element = element.find("axis")
        axis = np.array(
            _numbers(
                path,
                f"{where} <axis xyz>",
                (axis_element.attrib if axis_element is not None else {}).get("xyz", "1 0 0"),
                3,
            )
        )
        if kind in MOVABLE:
            norm = float(np.linalg.norm(axis))
            if norm < 1e-12:
                raise UrdfError(f"{path}: {where}: <axis> is zero")
            axis = axis / norm
        limit, dynamics = element.find("limit"), element.find("dynamics")
        unbounded = kind == "continuous"
        joints[name] = UrdfJoint(
            name=name,
            type=kind,  # type: ignore[arg-type]  # checked against JointType above
            parent=parent.attrib["link"],
            child=child.attrib["link"],
            origin=origin,
            axis=axis,
            lower=-math.inf if unbounded else _attribute(path, where, limit, "lower", -math.inf),
            upper=math.inf if unbounded else _attribute(path, where, limit, "upper", math.inf),
            effort=_attribute(path, where, limit, "effort", math.inf),
            velocity=_attribute(path, where, limit, "velocity", math.inf),
            damping=_attribute(path, where, dynamics, "damping", 0.0),
            friction=_attribute(path, where, dynamics, "friction", 0.0),
        )
    return UrdfModel(path=path, name=root.attrib.get("name", path.stem), links=links, joints=joints)


class Kinematics:
    """Forward kinematics and position Jacobians of chosen links of one arm, float64 numpy.

    Args:
        chains: Link name → its chain (from :meth:`UrdfModel.chain`), all from the same base link.
        joint_count: Number of controlled joints.
    """

    def __init__(self, chains: Mapping[str, Sequence[ChainStep]], joint_count: int) -> None:
        self.chains = {link: tuple(steps) for link, steps in chains.items()}
        self.joint_count = joint_count
        # Per step: fixed rotation, fixed translation, and the joint's K and K² (Rodrigues), precomputed.
        self._plans = {
            link: [
                (
                    step.origin[:3, :3].copy(),
                    step.origin[:3, 3].copy(),
                    step.joint,
                    step.axis,
                    _skew(step.axis),
                    _skew(step.axis) @ _skew(step.axis),
                    step.prismatic,
                )
                for step in steps
            ]
            for link, steps in self.chains.items()
        }

    @property
    def links(self) -> tuple[str, ...]:
        """The links this evaluates, in order."""
        return tuple(self.chains)

    def transforms(
        self, link: str, joint_position: ArrayLike
    ) -> tuple[
        NDArray[np.float64], NDArray[np.float64], list[tuple[int, NDArray[np.float64], NDArray[np.float64], bool]]
    ]:
        """The base→link rotation and translation, and every controlled joint on the way.

        Returns:
            ``(R, p, joints)`` with joints as (index, axis in the base frame, origin in the base frame, prismatic).
        """
        q = np.asarray(joint_position, dtype=np.float64)
        rotation, translation = np.eye(3), np.zeros(3)
        joints: list[tuple[int, NDArray[np.float64], NDArray[np.float64], bool]] = []
        for fixed_rotation, fixed_translation, joint, axis, k, k2, prismatic in self._plans[link]:
            translation = translation + rotation @ fixed_translation
            rotation = rotation @ fixed_rotation
            if joint is not None:
                joints.append((joint, rotation @ axis, translation, prismatic))
                angle = float(q[joint])
                if prismatic:
                    translation = translation + rotation @ (axis * angle)
                else:
                    rotation = rotation @ (np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * k2)
        return rotation, translation, joints

    def position(self, link: str, joint_position: ArrayLike) -> NDArray[np.float64]:
        """The link frame's origin in the base frame, m, for one joint vector."""
        _, translation, _ = self.transforms(link, joint_position)
        return translation

    def positions(self, joint_position: ArrayLike) -> NDArray[np.float64]:
        """Every link's position, shape ``(links, 3)``, for one joint vector."""
        return np.stack([self.position(link, joint_position) for link in self.chains])

    def jacobian(
        self, link: str, joint_position: ArrayLike, angular: bool = False
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The link's position and its position Jacobian ``∂p/∂q`` of shape ``(3, joints)``.

        A revolute joint with world axis a through point o contributes ``a × (p − o)``, a
        prismatic one ``a``; joints off the link's chain contribute 0. With ``angular``, the
        geometric Jacobian ``[v; ω] = J q̇`` of shape ``(6, joints)``: below the linear rows, a
        revolute joint contributes its axis a to ω and a prismatic one 0.
        """
        _, point, joints = self.transforms(link, joint_position)
        jacobian = np.zeros((6 if angular else 3, self.joint_count))
        for index, axis, origin, prismatic in joints:
            jacobian[:3, index] = axis if prismatic else np.cross(axis, point - origin)
            if angular and not prismatic:
                jacobian[3:, index] = axis
        return point, jacobian
