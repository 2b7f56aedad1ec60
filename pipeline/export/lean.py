r"""The lean ONNX graph of a link-point Gaussian policy: float32, every linear piece folded into Gemms.

At batch 1 ONNX Runtime pays about a microsecond per node, and float64 gets no prepacked or fused
kernels, so the graph the training modules trace (float64, ~140-225 nodes: gathers, the canonical
frame's ``atan2``, one small matrix product per kinematic step, the normaliser) costs 6-20 bare
MLPs. This module computes the *same function* in float32 with few nodes (10-19 in all, the MLP's
five included):

1. **Link positions are trig polynomials.** A revolute joint's 4x4 transform is affine in
   :math:`(\sin q, \cos q)` (Rodrigues: :math:`I + \sin q\,K + (1 - \cos q)\,K^2`), so the frame
   after joints :math:`j_1..j_k` has entries in the span of :math:`1` and :math:`\sin θ_f, \cos θ_f`,
   :math:`θ_f = \sum_i f_i q_{j_i}`, :math:`f ∈ \{-1, 0, 1\}^k` (product to sum), one of each
   :math:`±f`: :math:`(3^k - 1)/2` *angle classes*. One Gemm of the joint positions gives every
   class's :math:`[θ, θ + π/2]` and one ``Sin`` their sines and cosines. The coefficients are
   fitted (least squares, exact to ~1e-15, checked) on samples of the float64 chain
   :meth:`~models.kinematics.LinkPoints.frames` itself.
2. **Long chains: one pivot product.** A path of more joints than the split depth is the pivot
   frame :math:`D = [R\,|\,t]` after its first ``depth`` joints times the point :math:`[v, 1]` in
   that frame, each a trig polynomial of its own block of joints: one Gemm gives :math:`v_i`
   (repeated per row) and :math:`D_{ki}`, one Mul their products, and the first layer's Gemm sums
   them (:math:`p_k = \sum_i D_{ki} v_i` is linear in the products). The depth is the cheapest by
   :meth:`_Plan.cost` (the iiwa's 7 joints: blocks of 3 and 4, 53 classes); no block may span more
   than :data:`MAX_BLOCK` joints. Planar chains (the reacher) need no pivot at all.
3. **Point Gemm.** Where a chain has a pivot, the same Gemm also gives the positions of the points
   on shorter paths (three trig-polynomial columns each), so the first layer reads a few dozen
   point columns instead of every class's sine and cosine (the iiwa: 40 inputs instead of 140,
   canonical 41 instead of 189; at batch 1 a GEMV costs about its weight count). A chain without
   a pivot gets this Gemm only where it saves more than the node costs (:data:`_NODE_MACS`).
4. **One Gemm for the rest of the features.** Link positions, the goal subtraction, the kept
   components, the joint velocities, the normaliser :math:`(x - μ)/σ` and the actor's first layer
   are all affine in ``X = [sin/cos of the classes, (canonical: products) | the point Gemm's
   positions, pivot products; the observation, (canonical: r)]``; their composition is evaluated
   once in float64 on a basis of ``X`` and becomes the first layer's Gemm. The graph has one input,
   the observation, which the first Gemms read whole (zero weights where they need no column).
5. **Canonical frame without atan2.** With :math:`(c_φ, s_φ) = g_{xy}/|g_{xy}|` the canonical
   joint angle :math:`q' = q - φ` shifts every class holding it (sign +1 by choice) to
   :math:`θ' = θ - φ`, which enters only as :math:`\sin θ' = \sin θ\,c_φ - \cos θ\,s_φ`,
   :math:`\cos θ' = \cos θ\,c_φ + \sin θ\,s_φ` (four products per class, fed to the Gemms that
   read the classes); the canonical goal is :math:`(|g_{xy}|, 0, g_z)`. A zero :math:`g_{xy}`
   gives :math:`(c_φ, s_φ) = (1, 0)`, as ``atan2(0, 0) = 0`` does.
6. **Head.** The output layer keeps only the mean's columns (ORT fuses it with ``tanh``), times
   the half range; an action box centred on 0 needs no clamp (``|tanh| ≤ 1``), others keep it.

Both link-point feature kinds take this path: ``reach`` (:class:`~models.kinematics.ReachFeatures`,
the URDF chain of any profile) and ``reacher`` (:class:`~models.features.ReacherFeatures`, the
paper's planar shoulder/elbow/hand points, whose chain is two z-axis joints ``l₁`` apart and a hand
``l₂`` further; its goal is planar, so the goal's ``z`` is 0).

:func:`lean_policy` returns ``None`` where these assumptions do not hold (other features, a mirror
group, actions the rotation moves, prismatic joints, a path longer than two blocks, discrete actions);
the exporter then traces
the training modules. Either way the exporter checks the graph against the float64 training
modules (parity ≤ 1e-5) and measures its equivariance.
"""

from __future__ import annotations

import copy
import itertools
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

#: Added to the goal's x before its bearing is taken: a zero goal gets φ = 0, and its square stays a normal float32.
_TINY = 1e-18
#: The signal groups a lean graph reads (their observation indices say where each one sits).
LEAN_GROUPS = ("joint_position", "joint_velocity", "goal_position")


def _affine_matrix(tail: Callable[[Tensor], Tensor], width: int) -> tuple[Tensor, Tensor]:
    """``(W, b)`` of an affine map ``X (N, width) → (N, H)``, from its values on 0 and the basis (float64)."""
    inputs = torch.cat([torch.zeros(1, width, dtype=torch.float64), torch.eye(width, dtype=torch.float64)])
    with torch.no_grad():
        values: Tensor = tail(inputs)
    return values[1:] - values[:1], values[0]


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
    """Raw observations → actions, the lean float32 graph of a reach-feature Gaussian actor.

    Build it with :func:`lean_policy`; ``forward`` takes the observation in training (contract) order.
    """

    angle_weight: Tensor
    phase: Tensor
    point_weight: Tensor
    point_bias: Tensor
    first_weight: Tensor
    first_bias: Tensor
    shift_gather: Tensor
    bearing_weight: Tensor
    bearing_bias: Tensor
    half_range: Tensor
    middle: Tensor
    low: Tensor
    high: Tensor

    def __init__(
        self,
        *,
        angle_weight: Tensor,
        points: tuple[Tensor, Tensor, int] | None,
        first_weight: Tensor,
        first_bias: Tensor,
        layers: list[tuple[Tensor, Tensor]],
        low: Tensor,
        high: Tensor,
        canonical: tuple[list[int], Tensor, Tensor] | None,
    ) -> None:
        super().__init__()
        classes = angle_weight.shape[1]
        # [sin θ, cos θ] of every angle class as one Sin of [θ, θ + π/2].
        self.register_buffer("angle_weight", torch.cat([angle_weight, angle_weight], dim=1).float())
        self.register_buffer("phase", torch.cat([torch.zeros(classes), torch.full((classes,), math.pi / 2)]))
        # The point Gemm's columns: [v (12 per pivot), D (12 per pivot), direct positions (3 per point)].
        self.point_gemm = points is not None
        self.pivots = 0
        self.point_split: list[int] = []
        if points is not None:
            weight, bias, self.pivots = points
            self.register_buffer("point_weight", weight.float())
            self.register_buffer("point_bias", bias.float())
            direct = bias.shape[0] - 24 * self.pivots
            self.point_split = [12 * self.pivots, 12 * self.pivots, *([direct] if direct else [])]
        self.register_buffer("first_weight", first_weight.float())
        self.register_buffer("first_bias", first_bias.float())
        self.layers = nn.ParameterList()
        for weight, bias in layers:
            self.layers.append(nn.Parameter(weight.float(), requires_grad=False))
            self.layers.append(nn.Parameter(bias.float(), requires_grad=False))
        self.register_buffer("half_range", (0.5 * (high - low)).float())
        self.register_buffer("middle", (0.5 * (high + low)).float())
        self.register_buffer("low", low.float())
        self.register_buffer("high", high.float())
        # A box centred on 0 needs no clamp: |tanh| ≤ 1 in float32, so |tanh · high| ≤ high exactly.
        self.centred = bool((high + low == 0).all())
        same = bool((low == low[0]).all() and (high == high[0]).all())
        self.uniform = (float(low[0]), float(high[0])) if same else None
        self.canonical = canonical is not None
        if canonical is not None:
            gather, weight, bias = canonical
            self.register_buffer("shift_gather", torch.tensor(gather, dtype=torch.long))
            self.register_buffer("bearing_weight", weight.float())
            self.register_buffer("bearing_bias", bias.float())

    def forward(self, observation: Tensor) -> Tensor:
        """``(B, D)`` float32 raw observations (contract order) → ``(B, A)`` float32 actions."""
        trig = torch.sin(torch.addmm(self.phase, observation, self.angle_weight))
        angular = [trig]
        extra: list[Tensor] = []
        if self.canonical:
            # (x, y, x, y, …) + (tiny, 0, tiny, 0, …): |·| = √(2n) r; the weights absorb the √(2n).
            bearing = torch.addmm(self.bearing_bias, observation, self.bearing_weight)
            norm = torch.linalg.vector_norm(bearing, dim=-1, keepdim=True)
            # (sin θ, cos θ, cos θ, sin θ) of every class holding the shifted joint, times (c_φ, s_φ, c_φ, s_φ).
            angular.append(trig.index_select(-1, self.shift_gather) * (bearing / norm))
            extra.append(norm)
        point_part = angular
        if self.point_gemm:
            base = angular[0] if len(angular) == 1 else torch.cat(angular, dim=-1)
            blocks = torch.addmm(self.point_bias, base, self.point_weight)
            if self.pivots:
                # Per pivoted point v_i (repeated for each row k) and D[k, i]; the first Gemm sums over i.
                local, frame, *direct = torch.split(blocks, self.point_split, dim=-1)
                point_part = [*direct, local * frame]
            else:
                point_part = [blocks]
        x = torch.cat([*point_part, observation, *extra], dim=-1)
        hidden = torch.addmm(self.first_bias, x, self.first_weight)
        for k in range(0, len(self.layers), 2):
            hidden = torch.addmm(self.layers[k + 1], torch.relu(hidden), self.layers[k])
        action = torch.tanh(hidden) * self.half_range
        if self.centred:
            return action
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
        groups: ``(signal group, observation indices)`` per group, in any order: exactly :data:`LEAN_GROUPS`.
    """
    if not isinstance(actor, GaussianTanhActor) or actor.members != 1:
        return None
    features = _LinkPointLayout.of(actor.encoder.features)
    if features is None or sorted(name for name, _ in groups) != sorted(LEAN_GROUPS):
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


#: Most joints one trig-polynomial block may span: a block of k joints has (3^k - 1)/2 angle classes.
MAX_BLOCK = 5
#: Multiply-adds one more ORT node costs at batch 1 when choosing the split depth and the point Gemm: ~0.7 µs
#: of dispatch against ~10 float32 multiply-adds per ns in small GEMVs (bench_inference's graphs, 2026-12-02).
_NODE_MACS = 7000
#: Largest fit residual (m) of a trig-polynomial block before the lean graph is refused.
_FIT_TOLERANCE = 1e-9


def _classes(columns: list[int], width: int, shifted: int) -> list[tuple[int, ...]]:
    """Angle classes ``f ∈ {-1, 0, 1}^columns``, ``f ≠ 0``, one of ``±f``: the shifted joint's, else the first, +1."""
    out = []
    for signs in itertools.product((-1, 0, 1), repeat=len(columns)):
        f = [0] * width
        for column, sign in zip(columns, signs, strict=True):
            f[column] = sign
        lead = f[shifted] if shifted >= 0 and f[shifted] else next((x for x in f if x), 0)
        if lead == 1:
            out.append(tuple(f))
    return out


@dataclass
class _Plan:
    """Which joints each output point's position depends on, split at ``depth`` joints into pivot frame and rest."""

    direct: dict[int, list[int]]  # output index → joint columns, for paths of ≤ depth joints
    pivoted: dict[int, tuple[int, list[int], list[int]]]  # output index → (pivot step, columns before, after)
    classes: list[tuple[int, ...]]
    shifted: list[int]  # classes holding the shifted joint (canonical policies), each rotated with 4 products

    @property
    def angular_width(self) -> int:
        """Columns of the angular input: sin and cos of every class, 4 products per shifted class."""
        return 2 * len(self.classes) + 4 * len(self.shifted)

    def point_gemm(self, hidden: int) -> bool:
        """Whether the point positions get a Gemm of their own: always with a pivot, else where it saves work."""
        points = 3 * len(self.direct)
        return bool(self.pivoted) or (self.angular_width + hidden) * points + _NODE_MACS < self.angular_width * hidden

    def cost(self, hidden: int) -> int:
        """Multiply-adds of the point Gemm and the first layer (``hidden`` wide); each extra node as :data:`_NODE_MACS`.

        The depth with the least cost wins.
        """
        if not self.point_gemm(hidden):
            return self.angular_width * hidden
        outputs = 24 * len(self.pivoted) + 3 * len(self.direct)
        first = 12 * len(self.pivoted) + 3 * len(self.direct)
        nodes = 3 if self.pivoted else 1  # Gemm, Split, Mul
        return self.angular_width * outputs + first * hidden + nodes * _NODE_MACS


def _plan(paths: list[list[tuple[int, int]]], depth: int, width: int, shifted: int) -> _Plan | None:
    """Every path (``(step, column)`` per joint, root first) split at ``depth`` joints; ``None`` past MAX_BLOCK."""
    direct, pivoted, blocks = {}, {}, set()
    for output, path in enumerate(paths):
        columns = [column for _, column in path]
        if len(path) <= depth:
            direct[output] = columns
            blocks.add(tuple(sorted(columns)))
        else:
            pivoted[output] = (path[depth - 1][0], columns[:depth], columns[depth:])
            blocks |= {tuple(sorted(columns[:depth])), tuple(sorted(columns[depth:]))}
    if any(len(block) > MAX_BLOCK for block in blocks):
        return None
    classes = sorted({f for block in blocks for f in _classes(list(block), width, shifted)})
    return _Plan(direct, pivoted, classes, [m for m, f in enumerate(classes) if shifted >= 0 and f[shifted] != 0])


def _fit(
    values: NDArray[np.float64], angles: NDArray[np.float64], classes: list[tuple[int, ...]], columns: list[int]
) -> NDArray[np.float64] | None:
    """Coefficients ``(1 + 2M, d)`` on ``[1, sin θ, cos θ]`` of the classes over ``columns``; ``None`` if not exact."""
    used = [m for m, f in enumerate(classes) if all(f[c] == 0 for c in range(len(f)) if c not in columns)]
    basis = np.concatenate([np.ones((len(angles), 1)), np.sin(angles[:, used]), np.cos(angles[:, used])], axis=1)
    solution, *_ = np.linalg.lstsq(basis, values, rcond=None)
    if np.abs(basis @ solution - values).max() > _FIT_TOLERANCE:
        return None
    out = np.zeros((1 + 2 * len(classes), values.shape[1]))
    out[0] = solution[0]
    out[1 + np.array(used)] = solution[1 : 1 + len(used)]
    out[1 + len(classes) + np.array(used)] = solution[1 + len(used) :]
    return out


def _build(
    actor: GaussianTanhActor,
    features: _LinkPointLayout,
    groups: list[tuple[str, list[int]]],
    canonical: bool,
    symmetry: BoundSymmetry,
) -> LeanReachPolicy | None:
    points = copy.deepcopy(features.points).double()
    index = dict(groups)
    position_cols, goal_cols = index["joint_position"], index["goal_position"]
    joints_in = len(position_cols)
    names = features.observation_names
    column_of = [position_cols.index(i) for i in features.position_index]  # tree joint → joint_position column
    shift_column = position_cols.index(names.index(symmetry.observation_angle_names[0])) if canonical else -1

    # Every output point's joints, root first, then the cheapest split depth.
    paths: list[list[tuple[int, int]]] = []
    for step in points.outputs:
        path = []
        while step >= 0:
            parent, joint, _ = points._plan[step]
            if joint is not None:
                path.append((step, column_of[joint]))
            step = parent
        paths.append(path[::-1])
    first = actor.trunk.hidden_layers[0] if actor.trunk.hidden_layers else actor.trunk.output_layer
    assert isinstance(first, EnsembleLinear)
    hidden = first.weight.shape[-1]
    longest = max(len(path) for path in paths)
    plans = [_plan(paths, depth, joints_in, shift_column) for depth in range(1, longest + 1)]
    feasible = [plan for plan in plans if plan is not None]
    if not feasible:
        return None
    plan = min(feasible, key=lambda p: p.cost(hidden))
    point_gemm = plan.point_gemm(hidden)
    classes = np.array(plan.classes, dtype=np.float64)  # (M, joints_in)
    count = len(plan.classes)

    # Sample the float64 chain and fit every block's trig polynomial (exact: residual ~1e-15).
    samples = 4 * (1 + 2 * count) + 64
    q = np.random.default_rng(0).uniform(-math.pi, math.pi, (samples, joints_in))
    with torch.no_grad():
        frames = points.frames(torch.as_tensor(q[:, column_of]))
    angles = q @ classes.T
    direct: dict[int, NDArray[np.float64]] = {}
    locals_fit: list[NDArray[np.float64]] = []
    frames_fit: list[NDArray[np.float64]] = []
    for output, columns in plan.direct.items():
        fitted = _fit(frames[points.outputs[output]][1].numpy(), angles, plan.classes, columns)
        if fitted is None:
            return None
        direct[output] = fitted
    for output, (step, before, after) in sorted(plan.pivoted.items()):
        rotation, translation = (t.numpy() for t in frames[step])
        position = frames[points.outputs[output]][1].numpy()
        local = np.einsum("nji,nj->ni", rotation, position - translation)  # Rᵀ (p - t)
        frame = np.concatenate([rotation, translation[:, :, None]], axis=2)  # the pivot frame's rows [R | t]
        homogeneous = np.concatenate([local, np.ones((samples, 1))], axis=1)
        local_fit = _fit(homogeneous, angles, plan.classes, after)
        frame_fit = _fit(frame.reshape(samples, 12), angles, plan.classes, before)
        if local_fit is None or frame_fit is None:
            return None
        locals_fit.append(np.tile(local_fit, (1, 3)))  # v_i at 4k + i, beside D[k, i]
        frames_fit.append(frame_fit)

    # The angular input: [sin θ, cos θ] (2M), then for canonical policies 4 products per shifted class.
    shifted = plan.shifted
    if canonical and not shifted:
        return None  # the shifted joint moves no output point
    angular_width = plan.angular_width
    # to_trig maps the angular input to [sin θ', cos θ'] of the canonical angles θ' = θ - φ (shifted classes).
    to_trig = np.zeros((angular_width, 2 * count))
    kept = [m for m in range(count) if m not in shifted]
    to_trig[kept, kept] = to_trig[[count + m for m in kept], [count + m for m in kept]] = 1.0
    scale = math.sqrt(2.0 * len(shifted)) if shifted else 1.0
    for k, m in enumerate(shifted):
        products = 2 * count + 4 * k  # (s c_φ, c s_φ, c c_φ, s s_φ) / scale
        to_trig[products : products + 2, m] = scale, -scale  # sin θ' = s c_φ - c s_φ
        to_trig[products + 2 : products + 4, count + m] = scale  # cos θ' = c c_φ + s s_φ
    direct_order = sorted(direct)
    point_layer = None
    if point_gemm:
        # Every pivoted point's [v, 1] (x3), their frames, then the direct points' positions.
        stacked = np.concatenate(locals_fit + frames_fit + [direct[output] for output in direct_order], axis=1)
        point_layer = (torch.as_tensor(to_trig @ stacked[1:]), torch.as_tensor(stacked[0]), len(plan.pivoted))

    # First-layer Gemm over X = [point part, observation, (canonical: √(2n) r)], the point part being the
    # point Gemm's [direct positions (3 each), pivot products (12 each)], else the angular input. It reads
    # the velocities and the goal off the observation (the joint positions there get zero weights).
    direct_at = {output: 3 * k for k, output in enumerate(direct_order)}
    pivot_at = {output: 3 * len(direct) + 12 * k for k, output in enumerate(sorted(plan.pivoted))}
    after_points = 3 * len(direct) + 12 * len(plan.pivoted) if point_gemm else angular_width
    width = after_points + len(names) + (1 if canonical else 0)
    goal_axis = {names[i].split(".", 1)[1]: after_points + i for i in goal_cols}
    normalizer = actor.encoder.normalizer
    trig_map = torch.as_tensor(to_trig)

    def tail(x: Tensor) -> Tensor:
        rows = x.shape[0]
        # [1, sin θ', cos θ'] of the classes, once, where the direct points' positions are not in X already.
        ones = torch.ones(rows, 1, dtype=torch.float64)
        trig = None if point_gemm else torch.cat([ones, x[:, :angular_width] @ trig_map], dim=1)

        def position(output: int) -> Tensor:
            if output in plan.pivoted:
                return x[:, pivot_at[output] : pivot_at[output] + 12].reshape(rows, 3, 4).sum(-1)
            if trig is None:
                return x[:, direct_at[output] : direct_at[output] + 3]
            return trig @ torch.as_tensor(direct[output])

        positions = [position(output) for output in range(len(paths))]
        zero = torch.zeros(rows, dtype=torch.float64)
        if canonical:
            goal = torch.stack([x[:, -1] / scale, zero, x[:, goal_axis["z"]] if "z" in goal_axis else zero], -1)
        else:
            goal = torch.stack([x[:, goal_axis[axis]] if axis in goal_axis else zero for axis in "xyz"], dim=-1)
        relative = (torch.stack(positions, dim=1) - goal[:, None, :]).flatten(1).index_select(1, features.keep_index)
        velocity = x[:, [after_points + i for i in features.velocity_index]]
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
        gather = [i for m in shifted for i in (m, count + m, count + m, m)]
        x_at, y_at = names.index("goal_position.x"), names.index("goal_position.y")
        bearing_weight = torch.zeros(len(names), 4 * len(shifted), dtype=torch.float64)
        bearing_weight[x_at, 0::2] = 1.0  # (x, y, x, y, …): c_φ pairs with sin θ, s_φ with cos θ
        bearing_weight[y_at, 1::2] = 1.0
        bearing_bias = torch.zeros(4 * len(shifted), dtype=torch.float64)
        bearing_bias[0::2] = _TINY
        canonical_parts = (gather, bearing_weight, bearing_bias)
    # The classes' angles θ = f·q, read off the joint positions' columns of the observation.
    angle_weight = torch.zeros(len(names), count, dtype=torch.float64)
    angle_weight[position_cols] = torch.as_tensor(classes.T)
    lean = LeanReachPolicy(
        angle_weight=angle_weight,
        points=point_layer,
        first_weight=first_weight,
        first_bias=first_bias,
        layers=layers,
        low=actor.action_low.detach().double(),
        high=actor.action_high.detach().double(),
        canonical=canonical_parts,
    )
    return lean.eval()
