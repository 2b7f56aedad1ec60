r"""Forward kinematics of any serial arm inside the network, and the target-centred reach features.

:class:`LinkPoints` evaluates link-frame positions from joint angles with the URDF chain folded
into constant buffers (float32 by default), so it is exported into the ONNX graph with the rest of
the policy. Each chain step is a fixed transform :math:`(R_o, t_o)` followed by a controlled joint
about unit axis :math:`a` (Rodrigues, with :math:`K = [a]_\times`):

.. math::

    R_j(q) = I + \sin q\,K + (1 - \cos q)\,K^2,\qquad
    p \leftarrow p + R\,t_o,\quad R \leftarrow R\,R_o\,R_j(q).

:class:`ReachFeatures` are the paper's target-centred features for any arm: the end effector and
chosen link points relative to the goal, plus the joint velocities. Turning the symmetry joint by
θ and rotating the goal by :math:`R_z(θ)` maps every point to :math:`R_z(θ)(p - g)` and leaves the
velocities unchanged.

The tree comes from ``sim.robots.urdf.UrdfModel.tree``; this module does not import the
simulator, it only needs the steps' ``parent``, ``origin`` (4x4), ``joint``, ``axis`` and
``prismatic`` attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from models.features import FeatureExtractor, observation_indices

if TYPE_CHECKING:  # only the type: the models package does not import the simulator at run time
    from sim.robots.profile import Robot


class TreeStepLike(Protocol):
    """One frame of a kinematic tree (``sim.robots.urdf.TreeStep``)."""

    @property
    def parent(self) -> int:
        """Index of the parent frame among the steps (-1: the base)."""
        ...

    @property
    def origin(self) -> NDArray[np.float64]:
        """4x4 fixed transform from the parent frame."""
        ...

    @property
    def joint(self) -> int | None:
        """Index of the controlled joint moved after the origin, or None."""
        ...

    @property
    def axis(self) -> NDArray[np.float64]:
        """Unit joint axis in its own frame."""
        ...

    @property
    def prismatic(self) -> bool:
        """True for a translating joint."""
        ...


def _skew(axis: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])


class LinkPoints(torch.nn.Module):
    """Joint positions ``(..., J)`` → link-frame positions ``(..., L, 3)`` in the base frame.

    Args:
        links: The link names, one per output.
        steps: The kinematic tree, parents first (``sim.robots.urdf.UrdfModel.tree``).
        outputs: The step index of each link's frame.
        dtype: Dtype of the constant buffers (float32 for the exported policy).
    """

    def __init__(
        self,
        links: Sequence[str],
        steps: Sequence[TreeStepLike],
        outputs: Sequence[int],
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if len(links) != len(outputs):
            raise ValueError(f"one output step per link: got {len(links)} links and {len(outputs)} outputs")
        self.links = tuple(links)
        self.outputs = tuple(int(i) for i in outputs)
        self._plan: list[tuple[int, int | None, bool]] = []
        for index, step in enumerate(steps):
            if not -1 <= step.parent < index:
                raise ValueError(f"step {index}: parent {step.parent} must come before it")
            origin = np.asarray(step.origin, dtype=np.float64)
            self.register_buffer(f"_r{index}", torch.as_tensor(origin[:3, :3], dtype=dtype), persistent=False)
            self.register_buffer(f"_t{index}", torch.as_tensor(origin[:3, 3], dtype=dtype), persistent=False)
            if step.joint is not None:
                axis = np.asarray(step.axis, dtype=np.float64)
                k = _skew(axis)
                self.register_buffer(f"_k{index}", torch.as_tensor(k, dtype=dtype), persistent=False)
                self.register_buffer(f"_k2_{index}", torch.as_tensor(k @ k, dtype=dtype), persistent=False)
                self.register_buffer(f"_a{index}", torch.as_tensor(axis, dtype=dtype), persistent=False)
            self._plan.append((step.parent, step.joint, bool(step.prismatic)))

    def forward(self, joint_position: Tensor) -> Tensor:
        """Link positions, ``(..., L, 3)``, ordered as ``links``."""
        frames = self.frames(joint_position)
        return torch.stack([frames[i][1] for i in self.outputs], dim=-2)

    def frames(self, joint_position: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``(rotation (..., 3, 3), translation (..., 3))`` of every step's frame in the base frame, in step order."""
        batch = joint_position.shape[:-1]
        eye = torch.eye(3, dtype=joint_position.dtype, device=joint_position.device)
        base = (
            eye.expand(*batch, 3, 3),
            torch.zeros(*batch, 3, dtype=joint_position.dtype, device=joint_position.device),
        )
        frames: list[tuple[Tensor, Tensor]] = []
        for index, (parent, joint, prismatic) in enumerate(self._plan):
            rotation, translation = frames[parent] if parent >= 0 else base
            translation = translation + rotation @ getattr(self, f"_t{index}")
            rotation = rotation @ getattr(self, f"_r{index}")
            if joint is not None:
                q = joint_position[..., joint, None, None]
                if prismatic:
                    translation = translation + (rotation @ getattr(self, f"_a{index}")) * q[..., 0]
                else:
                    k: Tensor = getattr(self, f"_k{index}")
                    k2: Tensor = getattr(self, f"_k2_{index}")
                    rotation = rotation @ (eye + torch.sin(q) * k + (1.0 - torch.cos(q)) * k2)
            frames.append((rotation, translation))
        return frames


class ReachFeatures(FeatureExtractor):
    """Target-centred link points plus joint velocities, for any arm (see the module docstring).

    Features: ``<link>_from_goal.{x,y,z}`` for every link of ``points`` (end effector first, by
    convention; ``z`` left out for the ``planar_links``, whose height above the goal is constant),
    then ``joint_velocity.<joint>`` for every controlled joint.

    Args:
        observation_names: Raw observation component names; must hold ``joint_position.<j>``,
            ``joint_velocity.<j>`` for every joint and ``goal_position.{x,y,z}``.
        joint_names: Controlled joints, in the order the tree indexes them.
        points: The link points module.
        planar_links: Links whose ``z`` feature is constant by construction and left out.
    """

    position_index: Tensor
    velocity_index: Tensor
    goal_index: Tensor

    keep_index: Tensor

    def __init__(
        self,
        observation_names: Sequence[str],
        joint_names: Sequence[str],
        points: LinkPoints,
        planar_links: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.observation_names = tuple(observation_names)
        self.joint_names = tuple(joint_names)
        positions = observation_indices(self.observation_names, [f"joint_position.{j}" for j in self.joint_names])
        velocities = observation_indices(self.observation_names, [f"joint_velocity.{j}" for j in self.joint_names])
        goal = observation_indices(self.observation_names, [f"goal_position.{axis}" for axis in "xyz"])
        self.register_buffer("position_index", torch.tensor(positions, dtype=torch.long), persistent=False)
        self.register_buffer("velocity_index", torch.tensor(velocities, dtype=torch.long), persistent=False)
        self.register_buffer("goal_index", torch.tensor(goal, dtype=torch.long), persistent=False)
        self.points = points
        self.planar_links = tuple(planar_links)
        kept = [
            (3 * i + a, f"{link}_from_goal.{axis}")
            for i, link in enumerate(points.links)
            for a, axis in enumerate("xyz")
            if not (axis == "z" and link in self.planar_links)
        ]
        self.register_buffer("keep_index", torch.tensor([i for i, _ in kept], dtype=torch.long), persistent=False)
        self.feature_names = (*(name for _, name in kept), *(f"joint_velocity.{j}" for j in self.joint_names))

    @classmethod
    def from_robot(cls, robot: Robot, observation_names: Sequence[str]) -> ReachFeatures:
        """The features of a robot profile: its end effector, then its ``task.feature_links``."""
        steps, outputs = robot.tree()
        points = LinkPoints(robot.feature_links, steps, outputs)
        return cls(observation_names, robot.joint_names, points, robot.constant_height_links)

    def forward(self, observation: Tensor) -> Tensor:
        """Features ``(..., 3·L + J)`` of raw observations ``(..., D)``, ordered as ``feature_names``."""
        q = observation.index_select(-1, self.position_index)
        goal = observation.index_select(-1, self.goal_index)
        relative = (self.points(q) - goal.unsqueeze(-2)).flatten(-2).index_select(-1, self.keep_index)
        return torch.cat([relative, observation.index_select(-1, self.velocity_index)], dim=-1)
