"""The robot description: a planar 2-link arm read from its URDF, and its forward kinematics.

The URDF under ``sim/assets/`` is the single source of truth for the arm. Everything downstream
(the simulator, ingestion's reward rule, the policy's feature module) reads link lengths, joint
names and limits from here, never from constants of its own.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

ASSETS_DIR = Path(__file__).parent / "assets"
DEFAULT_URDF = ASSETS_DIR / "reacher.urdf"


class RobotDescriptionError(ValueError):
    """The URDF is unreadable or does not describe a planar 2-link arm."""


@dataclass(frozen=True)
class JointSpec:
    """One actuated joint of the arm, as declared in the URDF.

    Attributes:
        name: Joint name (the name a real robot publishes in ``sensor_msgs/JointState``).
        continuous: True for a joint without position limits.
        lower: Lower position limit in rad (``-inf`` when continuous).
        upper: Upper position limit in rad (``+inf`` when continuous).
        effort: Torque limit in N·m.
        velocity: Velocity limit in rad/s.
        damping: Viscous damping in N·m·s/rad.
        friction: Coulomb friction in N·m.
    """

    name: str
    continuous: bool
    lower: float
    upper: float
    effort: float
    velocity: float
    damping: float
    friction: float


@dataclass(frozen=True)
class RobotDescription:
    """A planar 2-link arm: shoulder at the base origin, elbow, then the hand (end effector).

    Attributes:
        urdf_path: The URDF file this description was read from.
        name: The robot name from the URDF.
        joints: The actuated joints in chain order (shoulder first).
        link_lengths: Shoulder→elbow and elbow→hand distances in m.
        hand_link: Name of the end-effector link.
    """

    urdf_path: Path
    name: str
    joints: tuple[JointSpec, JointSpec]
    link_lengths: tuple[float, float]
    hand_link: str

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Actuated joint names in chain order."""
        return tuple(joint.name for joint in self.joints)

    @property
    def reach(self) -> float:
        """Largest distance from the shoulder the hand can reach, in m."""
        return sum(self.link_lengths)

    @property
    def effort_limits(self) -> NDArray[np.float64]:
        """Per-joint torque limits in N·m, in chain order."""
        return np.array([joint.effort for joint in self.joints])

    def forward_kinematics(self, joint_position: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Elbow and hand positions in the base frame.

        With link lengths l1, l2 and joint angles q1 (shoulder), q2 (elbow):
        elbow = l1·(cos q1, sin q1), hand = elbow + l2·(cos(q1+q2), sin(q1+q2)).

        Args:
            joint_position: Joint angles in rad, shape ``(..., 2)``, shoulder first.

        Returns:
            ``(elbow, hand)``, each of shape ``(..., 2)`` in m.
        """
        q = np.asarray(joint_position, dtype=np.float64)
        if q.shape[-1:] != (2,):
            raise ValueError(f"joint_position must have shape (..., 2), got {q.shape}")
        l1, l2 = self.link_lengths
        if q.ndim == 1:  # one arm, the simulator's every step: the same ufuncs on scalars, without array bookkeeping
            q1, q2 = q.tolist()
            q12 = q1 + q2
            ex, ey = l1 * np.cos(q1), l1 * np.sin(q1)
            return np.array([ex, ey]), np.array([ex + l2 * np.cos(q12), ey + l2 * np.sin(q12)])
        q1, q12 = q[..., 0], q[..., 0] + q[..., 1]
        elbow, hand = np.empty(q.shape), np.empty(q.shape)  # filled in place: np.stack dominates for one arm
        elbow[..., 0], elbow[..., 1] = l1 * np.cos(q1), l1 * np.sin(q1)
        hand[..., 0], hand[..., 1] = elbow[..., 0] + l2 * np.cos(q12), elbow[..., 1] + l2 * np.sin(q12)
        return elbow, hand


def _float_attr(element: ET.Element | None, attribute: str, default: float, where: str) -> float:
    if element is None or attribute not in element.attrib:
        return default
    try:
        return float(element.attrib[attribute])
    except ValueError as error:
        raise RobotDescriptionError(
            f"{where}: attribute {attribute}={element.attrib[attribute]!r} is not a number"
        ) from error


def _xyz(element: ET.Element | None, where: str) -> tuple[float, float, float]:
    if element is None:
        return (0.0, 0.0, 0.0)
    values = element.attrib.get("xyz", "0 0 0").split()
    try:
        x, y, z = (float(v) for v in values)
    except ValueError as error:
        raise RobotDescriptionError(f"{where}: xyz={element.attrib.get('xyz')!r} is not three numbers") from error
    return x, y, z


@cache
def load_robot_description(urdf_path: Path = DEFAULT_URDF) -> RobotDescription:
    """Read a planar 2-link arm from a URDF.

    The URDF must hold a chain ``root -(revolute|continuous)-> link -(revolute)-> link -(fixed)->
    hand`` with every moving joint turning about +z and every child offset lying along +x of its
    parent, so that the arm is planar and link lengths are the joint offsets.

    Args:
        urdf_path: Path of the URDF file.

    Returns:
        The robot description.

    Raises:
        RobotDescriptionError: If the file is unreadable or describes another kind of robot; the
            message names the file and the offending joint or attribute.
    """
    path = Path(urdf_path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise RobotDescriptionError(f"{path}: cannot read URDF: {error}") from error
    joints = root.findall("joint")
    moving = [j for j in joints if j.attrib.get("type") in ("revolute", "continuous")]
    fixed = [j for j in joints if j.attrib.get("type") == "fixed"]
    if len(moving) != 2 or len(fixed) != 1:
        raise RobotDescriptionError(
            f"{path}: expected 2 revolute/continuous joints and 1 fixed hand joint, "
            f"found {len(moving)} moving and {len(fixed)} fixed"
        )
    specs: list[JointSpec] = []
    for joint in moving:
        name = joint.attrib.get("name", "")
        where = f"{path}: joint {name!r}"
        axis = _xyz(joint.find("axis"), where + " <axis>")
        if not np.allclose(axis, (0.0, 0.0, 1.0)):
            raise RobotDescriptionError(f"{where}: axis {axis} is not +z; the arm must be planar")
        limit = joint.find("limit")
        continuous = joint.attrib["type"] == "continuous"
        dynamics = joint.find("dynamics")
        specs.append(
            JointSpec(
                name=name,
                continuous=continuous,
                lower=-math.inf if continuous else _float_attr(limit, "lower", -math.inf, where),
                upper=math.inf if continuous else _float_attr(limit, "upper", math.inf, where),
                effort=_float_attr(limit, "effort", 0.0, where),
                velocity=_float_attr(limit, "velocity", math.inf, where),
                damping=_float_attr(dynamics, "damping", 0.0, where),
                friction=_float_attr(dynamics, "friction", 0.0, where),
            )
        )
        if specs[-1].effort <= 0:
            raise RobotDescriptionError(f"{where}: <limit effort> must be a positive torque limit")
    # Link lengths are the +x offsets of the elbow and of the hand from their parent joints.
    lengths = []
    for joint in (moving[1], fixed[0]):
        where = f"{path}: joint {joint.attrib.get('name')!r}"
        x, y, _ = _xyz(joint.find("origin"), where + " <origin>")
        if x <= 0 or abs(y) > 1e-12:
            raise RobotDescriptionError(f"{where}: origin must lie on +x of its parent, got x={x}, y={y}")
        lengths.append(x)
    hand = fixed[0].find("child")
    if hand is None or "link" not in hand.attrib:
        raise RobotDescriptionError(f"{path}: fixed joint {fixed[0].attrib.get('name')!r} has no <child link>")
    return RobotDescription(
        urdf_path=path,
        name=root.attrib.get("name", path.stem),
        joints=(specs[0], specs[1]),
        link_lengths=(lengths[0], lengths[1]),
        hand_link=hand.attrib["link"],
    )
