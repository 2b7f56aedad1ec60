"""The TF tree of an arm from its URDF: one parent → child transform per joint, at given joint positions.

Every URDF joint is one edge of the tree (``tf2_msgs/TFMessage`` of ``geometry_msgs/TransformStamped``):
its origin, then its motion at the joint's position (fixed joints: the origin alone, published once
on ``/tf_static``). Composing the edges from the root gives each link frame in the root frame,
which is what a 3-D panel draws and what PyBullet reports as ``worldLinkFrame`` for a base fixed
at the origin (tested to 1e-6 m).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sim.robots.urdf import UrdfModel


@dataclass(frozen=True)
class Transform:
    """One edge of the TF tree.

    Attributes:
        parent: Parent frame (link) name.
        child: Child frame (link) name.
        translation: Child origin in the parent frame, m.
        rotation: Unit quaternion (x, y, z, w) of the child frame in the parent frame.
    """

    parent: str
    child: str
    translation: NDArray[np.float64]
    rotation: NDArray[np.float64]


def quaternion(rotation: NDArray[np.float64]) -> NDArray[np.float64]:
    """A 3x3 rotation matrix → unit quaternion (x, y, z, w), w ≥ 0 (Shepperd's method, stable for every angle)."""
    m = rotation
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0.0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    out = np.array(q, dtype=np.float64)
    out /= np.linalg.norm(out)
    return out if out[3] >= 0.0 else -out


def urdf_transforms(urdf: UrdfModel, positions: Mapping[str, float], moving: bool) -> list[Transform]:
    """The movable joints' edges at ``positions`` (absent ones at 0), or the fixed joints' (``moving=False``).

    Args:
        urdf: The arm's URDF.
        positions: Joint name → position (rad or m).
        moving: True for the movable joints (``/tf``), False for the fixed ones (``/tf_static``).
    """
    edges = []
    for joint in urdf.joints.values():
        if joint.movable != moving:
            continue
        matrix = joint.transform(float(positions.get(joint.name, 0.0)))
        edges.append(Transform(joint.parent, joint.child, matrix[:3, 3].copy(), quaternion(matrix[:3, :3])))
    return edges
