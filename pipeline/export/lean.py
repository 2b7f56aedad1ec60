r"""The lean ONNX graph of a link-point Gaussian policy: float32, every linear piece folded into Gemms.

At batch 1 ONNX Runtime pays about a microsecond per node, and float64 gets no prepacked or fused
kernels, so the graph the training modules trace (float64, ~140-225 nodes: gathers, the canonical
frame's ``atan2``, one small matrix product per kinematic step, the normaliser) costs 6-20 bare
MLPs. This module computes the *same function* in float32 with few nodes:

1. **Joint transforms, all in one Gemm.** A revolute joint about unit axis :math:`a` (with
   :math:`K = [a]_\times`) after the fixed transforms :math:`C` since the last joint is
   :math:`H(q) = C\,[R(q)] = C\,[I + K^2] + \sin q\; C\,[K] - \cos q\; C\,[K^2]` (4x4), affine in
   :math:`(\sin q, \cos q)`; so every joint's :math:`H_j` is one Gemm of ``[sin q, cos q]``.
2. **The chain.** :math:`D_j = D_{\mathrm{parent}(j)} H_j`: one 4x4 MatMul per joint that an
   output link depends on.
3. **One Gemm for the rest of the features.** Link positions (:math:`D\,c` for constant
   :math:`c`), the goal subtraction, the kept components, the joint velocities, the normaliser
   :math:`(x - μ)/σ` and the actor's first layer are all affine in ``X = [D entries, joint
   velocities, goal, r]``; their composition is evaluated once in float64 on a basis of ``X``
   and becomes the first layer's Gemm.
4. **Canonical frame without atan2.** With :math:`(c_φ, s_φ) = g_{xy}/|g_{xy}|` the canonical
   joint angle :math:`q' = q - φ` enters only as :math:`\sin q' = \sin q\,c_φ - \cos q\,s_φ`,
   :math:`\cos q' = \cos q\,c_φ + \sin q\,s_φ` (products fed to the joint Gemm) and the canonical
   goal is :math:`(|g_{xy}|, 0, g_z)` (fed to the first-layer Gemm). A zero :math:`g_{xy}` gives
   :math:`(c_φ, s_φ) = (1, 0)`, as ``atan2(0, 0) = 0`` does.
5. **Head.** The output layer keeps only the mean's columns; ``tanh``, the action box and the clamp.

Both link-point feature kinds take this path: ``reach`` (:class:`~models.kinematics.ReachFeatures`,
the URDF chain of any profile) and ``reacher`` (:class:`~models.features.ReacherFeatures`, the
paper's planar shoulder/elbow/hand points, whose chain is two z-axis joints ``l₁`` apart and a hand
``l₂`` further; its goal is planar, so the goal's ``z`` is 0).

:func:`lean_policy` returns ``None`` where these assumptions do not hold (other features, a mirror
group, actions the rotation moves, prismatic joints, discrete actions); the exporter then traces
the training modules. Either way the exporter checks the graph against the float64 training
modules (parity ≤ 1e-5) and measures its equivariance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from models.features import ReacherFeatures
from models.kinematics import LinkPoints, ReachFeatures
from models.layers import EnsembleLinear
from models.networks import GaussianTanhActor
from models.symmetry import BoundSymmetry

#: Added to the goal's x before its bearing is taken, and the floor of its norm: a zero goal gets φ = 0.
_TINY = 1e-30


def _affine_matrix(tail: Callable[[Tensor], Tensor], width: int) -> tuple[Tensor, Tensor]:
    """``(W, b)`` of an affine map ``X (N, width) → (N, H)``, from its values on 0 and the basis (float64)."""
    inputs = torch.cat([torch.zeros(1, width, dtype=torch.float64), torch.eye(width, dtype=torch.float64)])
    with torch.no_grad():
        values: Tensor = tail(inputs)
    return values[1:] - values[:1], values[0]


def _homogeneous(rotation: NDArray[np.float64], translation: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
    out = np.zeros((4, 4))
    out[:3, :3] = rotation
    if translation is not None:
        out[:3, 3] = translation
        out[3, 3] = 1.0
    return out


@dataclass(frozen=True)
class _ChainStep:
    """A step of a kinematic chain, as :class:`models.kinematics.TreeStepLike` describes it."""

    parent: int
    origin: NDArray[np.float64]
    joint: int | None
    axis: NDArray[np.float64] = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    prismatic: bool = False


@dataclass(frozen=True)
class _LinkPointLayout:
    """What the lean graph needs of a link-point feature module: the chain and where each number goes.

    Features are ``(points(q) - goal).flatten()[keep]`` (goal axes missing from the observation are
    0), then the joint velocities at ``velocity_index``.
    """

    observation_names: tuple[str, ...]
    points: LinkPoints
    position_index: list[int]  # observation index of each tree joint's position
    velocity_index: list[int]  # observation index of each velocity feature, in feature order
    keep_index: Tensor  # kept entries of the flattened (L, 3) relative points, in feature order

    @classmethod
    def of(cls, features: nn.Module) -> _LinkPointLayout | None:
        """The layout of ``reach`` or ``reacher`` features; ``None`` for any other feature module."""
        if isinstance(features, ReachFeatures):
            return cls(
                features.observation_names,
                features.points,
                [int(i) for i in features.position_index],
                [int(i) for i in features.velocity_index],
                features.keep_index,
            )
        if isinstance(features, ReacherFeatures):
            l1, l2 = features.link_lengths
            shift = [np.eye(4) for _ in range(2)]
            shift[0][0, 3], shift[1][0, 3] = l1, l2
            steps = [_ChainStep(-1, np.eye(4), 0), _ChainStep(0, shift[0], 1), _ChainStep(1, shift[1], None)]
            positions, velocities = features.signal_indices[:2], features.signal_indices[2:4]
            return cls(
                features.observation_names,
                LinkPoints(features.POINTS, steps, (0, 1, 2), dtype=torch.float64),
                list(positions),
                list(velocities),
                torch.tensor([0, 1, 3, 4, 6, 7]),  # x and y of each point
            )
        return None


class LeanReachPolicy(nn.Module):
    """Raw signal groups → clamped actions, the lean float32 graph of a reach-feature Gaussian actor.

    Build it with :func:`lean_policy`; ``forward`` takes the groups in the contract's input order.
    """

    joint_weight: Tensor
    joint_bias: Tensor
    first_weight: Tensor
    first_bias: Tensor
    shift_gather: Tensor
    bearing_weight: Tensor
    bearing_bias: Tensor

    def __init__(
        self,
        *,
        groups: list[tuple[str, list[int]]],
        joint_weight: Tensor,
        joint_bias: Tensor,
        chain: list[tuple[int, int]],
        anchors: list[int],
        first_weight: Tensor,
        first_bias: Tensor,
        layers: list[tuple[Tensor, Tensor]],
        low: Tensor,
        high: Tensor,
        canonical: tuple[list[int], Tensor, Tensor, int] | None,
    ) -> None:
        super().__init__()
        self.group_names = tuple(name for name, _ in groups)
        self.register_buffer("joint_weight", joint_weight.float())
        self.register_buffer("joint_bias", joint_bias.float())
        self.chain, self.anchors, self.joints = chain, anchors, len(chain)
        self.register_buffer("first_weight", first_weight.float())
        self.register_buffer("first_bias", first_bias.float())
        self.layers = nn.ParameterList()
        for weight, bias in layers:
            self.layers.append(nn.Parameter(weight.float(), requires_grad=False))
            self.layers.append(nn.Parameter(bias.float(), requires_grad=False))
        self.half_range: Tensor
        self.middle: Tensor
        self.low: Tensor
        self.high: Tensor
        self.register_buffer("half_range", (0.5 * (high - low)).float())
        self.register_buffer("middle", (0.5 * (high + low)).float())
        self.register_buffer("low", low.float())
        self.register_buffer("high", high.float())
        same = bool((low == low[0]).all() and (high == high[0]).all())
        self.uniform = (float(low[0]), float(high[0])) if same else None
        self.centred = True if bool((high + low == 0).all()) else None
        self.doubling: Tensor
        self.phase: Tensor
        joints = joint_weight.shape[0] // 2 - (2 if canonical is not None else 0)
        self.register_buffer("doubling", torch.cat([torch.eye(joints), torch.eye(joints)], dim=1))
        self.register_buffer("phase", torch.cat([torch.zeros(joints), torch.full((joints,), math.pi / 2)]))
        self.canonical = canonical is not None
        if canonical is not None:
            gather, weight, bias, self.goal_input = canonical
            self.register_buffer("shift_gather", torch.tensor(gather, dtype=torch.long))
            self.register_buffer("bearing_weight", weight.float())
            self.register_buffer("bearing_bias", bias.float())

    def forward(self, *signals: Tensor) -> Tensor:
        """One batch of raw signal groups (float32, contract order) → ``(B, A)`` float32 actions."""
        named = dict(zip(self.group_names, signals, strict=True))
        # [sin q, cos q] as one Sin of [q, q + π/2].
        trig = torch.sin(torch.addmm(self.phase, named["joint_position"], self.doubling))
        extra: list[Tensor] = []
        if self.canonical:
            goal = signals[self.goal_input]
            # (x, y, x, y) + (tiny, 0, tiny, 0): |·| = √2 r; the constants absorb the √2.
            bearing = torch.addmm(self.bearing_bias, goal, self.bearing_weight)
            norm = torch.clamp_min(torch.linalg.vector_norm(bearing, dim=-1, keepdim=True), math.sqrt(2.0) * _TINY)
            shifted = trig.index_select(-1, self.shift_gather)  # (sin q, cos q, cos q, sin q) of the shifted joint
            trig = torch.cat([trig, shifted * (bearing / norm)], dim=-1)
            extra.append(norm)
        transforms = torch.addmm(self.joint_bias, trig, self.joint_weight)
        steps = torch.split(transforms.reshape(-1, self.joints, 4, 4), 1, dim=1)
        frames: list[Tensor] = []
        for step, (_, parent) in zip(steps, self.chain, strict=True):
            frames.append(step if parent < 0 else frames[parent] @ step)
        anchors = torch.cat([frames[i] for i in self.anchors], dim=1).reshape(-1, 16 * len(self.anchors))
        x = torch.cat([anchors, named["joint_velocity"], named["goal_position"], *extra], dim=-1)
        hidden = torch.addmm(self.first_bias, x, self.first_weight)
        for k in range(0, len(self.layers), 2):
            hidden = torch.addmm(self.layers[k + 1], torch.relu(hidden), self.layers[k])
        action = torch.tanh(hidden) * self.half_range
        if self.centred is None:
            action = action + self.middle
        if self.uniform is not None:  # one Clip instead of Max and Min
            return torch.clamp(action, *self.uniform)
        return torch.clamp(action, self.low, self.high)


def lean_policy(
    actor: nn.Module, symmetry: BoundSymmetry, canonical: bool, groups: list[tuple[str, list[int]]]
) -> LeanReachPolicy | None:
    """The lean graph of one actor member, or ``None`` where it does not apply (see the module docstring).

    Args:
        actor: A one-member actor (float64 or float32), as the exporter selected it.
        symmetry: The run's symmetry.
        canonical: The actor was trained on canonicalised inputs.
        groups: ``(input name, observation indices)`` per graph input, in input order.
    """
    if not isinstance(actor, GaussianTanhActor) or actor.members != 1:
        return None
    features = _LinkPointLayout.of(actor.encoder.features)
    names = [name for name, _ in groups]
    if features is None or names != ["joint_position", "joint_velocity", "goal_position"]:
        return None
    if any(prismatic for _, _, prismatic in features.points._plan):
        return None
    index = dict(groups)
    observation_names = features.observation_names
    if canonical:
        if symmetry.has_mirror or not symmetry.actions_invariant or symmetry.rotate2d_fields != ("goal_position",):
            return None
        shifted = [observation_names.index(n) for n in symmetry.observation_angle_names]
        if not all(i in index["joint_position"] for i in shifted) or len(shifted) != 1:
            return None
    return _build(actor, features, groups, canonical, symmetry)


def _build(
    actor: GaussianTanhActor,
    features: _LinkPointLayout,
    groups: list[tuple[str, list[int]]],
    canonical: bool,
    symmetry: BoundSymmetry,
) -> LeanReachPolicy:
    points = features.points
    index = dict(groups)
    position_cols, velocity_cols, goal_cols = index["joint_position"], index["joint_velocity"], index["goal_position"]
    joints_in = len(position_cols)
    names = features.observation_names

    def buffer(name: str) -> NDArray[np.float64]:
        return np.asarray(getattr(points, name).detach().cpu().double().numpy())

    # Per step: the anchor (last joint step on its path, -1: the base) and the fixed transform C since it.
    anchor: list[int] = []
    offset: list[NDArray[np.float64]] = []
    linear: dict[int, tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], int, int]] = {}
    for i, (parent, joint, _) in enumerate(points._plan):
        origin = _homogeneous(buffer(f"_r{i}"), buffer(f"_t{i}"))
        before = (offset[parent] if parent >= 0 else np.eye(4)) @ origin
        parent_anchor = anchor[parent] if parent >= 0 else -1
        if joint is None:
            anchor.append(parent_anchor)
            offset.append(before)
            continue
        k, k2 = buffer(f"_k{i}"), buffer(f"_k2_{i}")
        h0 = before @ (_homogeneous(np.eye(3) + k2) + np.diag([0.0, 0.0, 0.0, 1.0]))
        column = position_cols.index(features.position_index[joint])
        linear[i] = (h0, before @ _homogeneous(k), before @ _homogeneous(-k2), column, parent_anchor)
        anchor.append(i)
        offset.append(np.eye(4))
    output_anchors = [anchor[step] for step in points.outputs]
    needed: set[int] = set()
    stack = [a for a in output_anchors if a >= 0]
    while stack:
        step = stack.pop()
        if step not in needed:
            needed.add(step)
            if linear[step][4] >= 0:
                stack.append(linear[step][4])
    order = sorted(needed)  # parents come before children
    chain = [(step, order.index(linear[step][4]) if linear[step][4] >= 0 else -1) for step in order]
    anchor_list = sorted({a for a in output_anchors if a >= 0})

    # Joint Gemm: [sin q, cos q, (canonical: sin q·c, cos q·s, cos q·c, sin q·s)/√2·√2] → every H_j.
    shift_column = -1
    if canonical:
        shift_column = position_cols.index(names.index(symmetry.observation_angle_names[0]))
    trig_width = 2 * joints_in + (4 if canonical else 0)
    joint_weight = np.zeros((trig_width, 16 * len(order)))
    joint_bias = np.zeros(16 * len(order))
    for m, step in enumerate(order):
        h0, h_sin, h_cos, column, _ = linear[step]
        block = slice(16 * m, 16 * (m + 1))
        joint_bias[block] = h0.reshape(-1)
        if column == shift_column:
            # The products arrive as shifted·bearing/|bearing| = (s c_φ, c s_φ, c c_φ, s s_φ) / √2 ... times √2.
            root2 = math.sqrt(2.0)
            base = 2 * joints_in
            joint_weight[base + 0, block] = root2 * h_sin.reshape(-1)  # sin q' = s c_φ - c s_φ
            joint_weight[base + 1, block] = -root2 * h_sin.reshape(-1)
            joint_weight[base + 2, block] = root2 * h_cos.reshape(-1)  # cos q' = c c_φ + s s_φ
            joint_weight[base + 3, block] = root2 * h_cos.reshape(-1)
        else:
            joint_weight[column, block] = h_sin.reshape(-1)
            joint_weight[joints_in + column, block] = h_cos.reshape(-1)

    # First-layer Gemm over X = [anchor frames (16 each), joint velocities, goal, (canonical: √2 r)].
    width = 16 * len(anchor_list) + len(velocity_cols) + len(goal_cols) + (1 if canonical else 0)
    goal_axis = {
        names[i].split(".", 1)[1]: len(velocity_cols) + 16 * len(anchor_list) + k for k, i in enumerate(goal_cols)
    }
    velocity_at = {obs: 16 * len(anchor_list) + k for k, obs in enumerate(velocity_cols)}
    first = actor.trunk.hidden_layers[0] if actor.trunk.hidden_layers else actor.trunk.output_layer
    assert isinstance(first, EnsembleLinear)
    normalizer = actor.encoder.normalizer

    def tail(x: Tensor) -> Tensor:
        count = x.shape[0]
        positions = []
        for step in points.outputs:
            c = torch.as_tensor(offset[step][:, 3], dtype=torch.float64)
            a = anchor[step]
            if a < 0:
                positions.append(c[:3].expand(count, 3))
            else:
                start = 16 * anchor_list.index(a)
                positions.append((x[:, start : start + 16].reshape(count, 4, 4) @ c)[:, :3])
        zero = torch.zeros(count, dtype=torch.float64)
        if canonical:
            goal = torch.stack(
                [x[:, -1] / math.sqrt(2.0), zero, x[:, goal_axis["z"]] if "z" in goal_axis else zero], -1
            )
        else:
            goal = torch.stack([x[:, goal_axis[axis]] if axis in goal_axis else zero for axis in "xyz"], dim=-1)
        relative = (torch.stack(positions, dim=1) - goal[:, None, :]).flatten(1).index_select(1, features.keep_index)
        velocity = torch.stack([x[:, velocity_at[i]] for i in features.velocity_index], dim=-1)
        encoded = normalizer(torch.cat([relative, velocity], dim=-1).to(normalizer.mean.dtype)).double()
        pre: Tensor = encoded @ first.weight[0].detach().double() + first.bias[0, 0].detach().double()
        return pre

    first_weight, first_bias = _affine_matrix(tail, width)
    later = [*actor.trunk.hidden_layers[1:], actor.trunk.output_layer]
    layers: list[tuple[Tensor, Tensor]] = []
    for layer in later:
        assert isinstance(layer, EnsembleLinear)
        layers.append((layer.weight[0].detach().double(), layer.bias[0, 0].detach().double()))
    action_dim = actor.action_dim
    if not actor.trunk.hidden_layers:
        first_weight, first_bias = first_weight[:, :action_dim], first_bias[:action_dim]
    else:
        weight, bias = layers[-1]
        layers[-1] = (weight[:, :action_dim], bias[:action_dim])
    canonical_parts = None
    if canonical:
        gather = [shift_column, joints_in + shift_column, joints_in + shift_column, shift_column]
        x_at, y_at = goal_cols.index(names.index("goal_position.x")), goal_cols.index(names.index("goal_position.y"))
        bearing_weight = torch.zeros(len(goal_cols), 4, dtype=torch.float64)
        bearing_weight[x_at, 0] = bearing_weight[x_at, 2] = 1.0  # (x, y, x, y): c_φ pairs with sin q, s_φ with cos q
        bearing_weight[y_at, 1] = bearing_weight[y_at, 3] = 1.0
        bearing_bias = torch.tensor([_TINY, 0.0, _TINY, 0.0], dtype=torch.float64)
        goal_input = [name for name, _ in groups].index("goal_position")
        canonical_parts = (gather, bearing_weight, bearing_bias, goal_input)
    lean = LeanReachPolicy(
        groups=groups,
        joint_weight=torch.as_tensor(joint_weight),
        joint_bias=torch.as_tensor(joint_bias),
        chain=chain,
        anchors=[order.index(a) for a in anchor_list],
        first_weight=first_weight,
        first_bias=first_bias,
        layers=layers,
        low=actor.action_low.detach().double(),
        high=actor.action_high.detach().double(),
        canonical=canonical_parts,
    )
    return lean.eval()
