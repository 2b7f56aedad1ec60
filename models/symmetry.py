"""Symmetry specs: how a group acts on NAMED observation and action fields, checked and batched in torch.

A :class:`SymmetrySpec` (loadable from YAML, e.g. ``deploy/symmetry/reacher.yaml``) lists the groups
and, per named field, which transform each component follows. Observation and action vectors are
flat with component names ``field.component`` (``joint_position.shoulder``, ``goal_position.x``);
the spec refers to fields and components by name only, so it cannot silently go wrong when the
vector layout changes.

**Groups.** ``rotation`` is SO(2) about the base z axis (training samples the cyclic subgroup
C_n, angles 2πk/n, or continuous angles); ``mirror`` is Z2, the reflection across the base x axis
(y → -y). Listing both gives their semidirect product O(2). An element g = (θ, m) with m ∈ {0, 1}
acts as *mirror first, then rotate*: ``g·v = R(θ) Mᵐ v``. Since ``M R(θ) = R(-θ) M``,

* composition: ``(θ₁, m₁)(θ₂, m₂) = (θ₁ + (-1)^{m₁} θ₂, m₁ ⊕ m₂)``,
* inverse: ``(θ, m)⁻¹ = (-(-1)ᵐ θ, m)`` (a reflection is its own inverse),

with angles wrapped to [-π, π).

**Transforms** (per field, every component covered exactly once):

* ``rotate2d`` on an (x, y) pair: rotation ``v → R(θ) v``, mirror ``(x, y) → (x, -y)``;
* ``angle_shift`` on revolute joints about the symmetry axis: rotation ``q → wrap(q + θ)``,
  mirror ``q → -q``;
* ``permute_sign`` (mirror only, invariant under rotation): under mirror component ``cᵢ`` moves
  to ``mirror_to[i]`` multiplied by ``sign[i]`` (left/right joints; a joint angle that is not
  about the axis but flips under mirror, like a planar elbow, is the identity permutation with
  sign -1). The map must be an involution;
* ``invariant``: unchanged by every element.

The mirror is therefore a signed permutation ``(Mv)ⱼ = sⱼ v_{p(j)}`` of the whole vector, and
rotation is ``vⱼ → cos θ·vⱼ + σⱼ sin θ·v_{q(j)}`` on rotate2d pairs (q swaps x and y, σ = (-1, +1))
plus ``+θ`` (wrapped) on angle components. :class:`BoundSymmetry` stores these as index/sign
vectors, so one gather and a few element-wise operations act on any leading batch shape, on CPU
or CUDA, inside traced/exported models (no Python loop over the batch, no data-dependent control
flow). Binding to the actual names validates coverage and runs numerical checks of the group laws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from torch import Tensor, nn

GroupName = Literal["rotation", "mirror"]
Section = Literal["observation", "action"]

#: Tolerance of the numerical group-law checks run on bind (float64).
LAW_TOLERANCE = 1e-9
#: Two discrete-action torque vectors closer than this (max-norm, relative to the table's scale) match.
ACTION_MATCH_TOLERANCE = 1e-6


class SymmetrySpecError(ValueError):
    """A symmetry spec is inconsistent, does not fit the names it is bound to, or breaks a group law."""


# ----------------------------------------------------------------------------------------- spec model
class RotationGroup(BaseModel):
    """How training samples the rotation group SO(2) about the base z axis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sampling: Literal["cyclic", "continuous"] = Field(
        "cyclic", description="cyclic: angles 2πk/order (the paper's C_n); continuous: uniform on [-π, π)."
    )
    order: int = Field(4, ge=1, description="n of the cyclic subgroup C_n sampled in training (4 in the paper).")


class Rotate2D(BaseModel):
    """An (x, y) pair: rotation v → R(θ)v, mirror (x, y) → (x, -y)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transform: Literal["rotate2d"] = Field(description="The transform's name, rotate2d.")
    components: tuple[str, ...] | None = Field(
        None, description="The x and y component names, in that order; null: the field's two components."
    )


class AngleShift(BaseModel):
    """Revolute joints about the symmetry axis: rotation q → wrap(q + θ), mirror q → -q."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transform: Literal["angle_shift"] = Field(description="The transform's name, angle_shift.")
    components: tuple[str, ...] | None = Field(
        None, description="Joint components whose angle shifts by θ; null: every component of the field."
    )


class PermuteSign(BaseModel):
    """Mirror only: component i moves to ``mirror_to[i]`` times ``sign[i]``; invariant under rotation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transform: Literal["permute_sign"] = Field(description="The transform's name, permute_sign.")
    components: tuple[str, ...] | None = Field(
        None, description="Source components; null: every component of the field, in vector order."
    )
    mirror_to: tuple[str, ...] | None = Field(
        None, description="Where each source component goes under mirror (same field); null: stays in place."
    )
    sign: tuple[float, ...] = Field(description="Factor (+1 or -1) applied to each source component under mirror.")

    @field_validator("sign", mode="before")
    @classmethod
    def _scalar_sign(cls, value: Any) -> Any:
        return (value,) if isinstance(value, int | float) else value


class Invariant(BaseModel):
    """Components unchanged by every group element."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transform: Literal["invariant"] = Field(description="The transform's name, invariant.")
    components: tuple[str, ...] | None = Field(None, description="Invariant components; null: the whole field.")


#: One transform rule of a field.
Rule = Rotate2D | AngleShift | PermuteSign | Invariant
FieldRule = Annotated[Rule, Field(discriminator="transform")]


def _as_rule_list(value: Any) -> Any:
    """Accept ``field: invariant`` and ``field: {transform: ...}`` as one-rule shorthands."""
    if isinstance(value, Mapping):
        return {
            field: [{"transform": rules}]
            if isinstance(rules, str)
            else [rules]
            if isinstance(rules, Mapping)
            else rules
            for field, rules in value.items()
        }
    return value


class SymmetrySpec(BaseModel):
    """A symmetry group and how it acts on each named observation and action field.

    Example (the reacher)::

        groups: [rotation]
        rotation: {sampling: cyclic, order: 4}
        observation:
          joint_position:
            - {transform: angle_shift, components: [shoulder]}
            - {transform: invariant, components: [elbow]}
          joint_velocity: invariant
          goal_position: {transform: rotate2d, components: [x, y]}
        action:
          joint_effort: invariant

    Use :meth:`bind` to check it against concrete observation/action names and get the batched
    torch implementation.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: tuple[GroupName, ...] = Field(
        description="The groups acting: rotation (SO(2) about base z), mirror (across the base x axis), or both."
    )
    rotation: RotationGroup = Field(
        default_factory=RotationGroup, description="Training-time sampling of the rotation group (if listed)."
    )
    observation: dict[str, tuple[FieldRule, ...]] = Field(
        description="Per observation field, its transforms; every component must be covered exactly once."
    )
    action: dict[str, tuple[FieldRule, ...]] = Field(
        description="Per action field, its transforms (torques of a planar arm are rotation-invariant)."
    )

    @field_validator("observation", "action", mode="before")
    @classmethod
    def _shorthands(cls, value: Any) -> Any:
        return _as_rule_list(value)

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: tuple[GroupName, ...]) -> tuple[GroupName, ...]:
        if not value:
            raise ValueError("list at least one group: rotation and/or mirror")
        if len(set(value)) != len(value):
            raise ValueError(f"each group may be listed once, got {list(value)}")
        return value

    @field_validator("observation", "action")
    @classmethod
    def _consistent(cls, fields: dict[str, tuple[Rule, ...]], info: ValidationInfo) -> dict[str, tuple[Rule, ...]]:
        section = str(info.field_name)
        if not fields:
            raise ValueError(f"{section}: no fields; every {section} field must be covered")
        for field, rules in fields.items():
            _resolve_field(section, field, rules, None)  # name-independent checks; bind does the rest
        return fields

    @property
    def has_rotation(self) -> bool:
        """True when the rotation group SO(2) is listed."""
        return "rotation" in self.groups

    @property
    def has_mirror(self) -> bool:
        """True when the mirror group Z2 is listed."""
        return "mirror" in self.groups

    def bind(
        self,
        observation_names: Sequence[str],
        action_names: Sequence[str],
        discrete_action_table: NDArray[np.floating] | None = None,
    ) -> BoundSymmetry:
        """Check the spec against concrete names and build its batched implementation.

        Args:
            observation_names: Component names of the observation vector (``field.component``).
            action_names: Component names of the (continuous) action vector, e.g. the torques.
            discrete_action_table: For discrete actions, ``(n_actions, action_dim)``: row i is the
                action vector (torques) of index i. The table must be closed under the group.

        Returns:
            The bound symmetry.

        Raises:
            SymmetrySpecError: Unknown or uncovered fields/components, wrong sizes, a table not
                closed under the group, or a violated group law; the message names the field.
        """
        return BoundSymmetry(self, observation_names, action_names, discrete_action_table)


# ----------------------------------------------------------------------------------------- resolution
@dataclass(frozen=True)
class _Plan:
    """The group action on one flat vector as index/sign vectors (numpy, built once on bind)."""

    mirror_source: NDArray[np.int64]  # (M v)_j = mirror_sign_j · v[mirror_source_j]
    mirror_sign: NDArray[np.float64]
    partner: NDArray[np.int64]  # rotate2d: x ↔ y of the pair; identity elsewhere
    sine_sign: NDArray[np.float64]  # -1 on x, +1 on y of a pair, 0 elsewhere
    rotated: NDArray[np.bool_]  # component of a rotate2d pair
    angle: NDArray[np.bool_]  # angle_shift component
    pairs: dict[str, tuple[int, int]]  # field → (x, y) indices of its rotate2d pair


def _split_names(section: str, names: Sequence[str]) -> dict[str, list[str]]:
    """Group ``field.component`` names by field, keeping vector order."""
    fields: dict[str, list[str]] = {}
    for name in names:
        field, dot, component = name.partition(".")
        if not dot or not field or not component:
            raise SymmetrySpecError(f"{section} name {name!r} is not of the form field.component")
        if component in fields.get(field, []):
            raise SymmetrySpecError(f"{section} name {name!r} appears twice")
        fields.setdefault(field, []).append(component)
    return fields


def _resolve_field(
    section: str,
    field: str,
    rules: Sequence[Rule],
    available: list[str] | None,
) -> list[tuple[Rule, tuple[str, ...]]]:
    """Check one field's rules; return each rule with its resolved component names.

    With ``available`` None (spec validation, no names yet) only the checks that do not need the
    field's component list run; rules with ``components: null`` are then resolved to ``()``.
    """
    where = f"{section} field {field!r}"
    if not rules:
        raise SymmetrySpecError(f"{where}: no transform; use invariant for components the group does not change")
    whole = [rule for rule in rules if rule.components is None]
    if whole and len(rules) > 1:
        raise SymmetrySpecError(
            f"{where}: a {whole[0].transform} rule without components covers the whole field, "
            f"so the other rules cover components twice"
        )
    resolved: list[tuple[Rule, tuple[str, ...]]] = []
    seen: dict[str, str] = {}
    for rule in rules:
        components = rule.components
        if components is None:
            components = tuple(available) if available is not None else None
        if components is not None:
            if available is not None:
                unknown = [c for c in components if c not in available]
                if unknown:
                    raise SymmetrySpecError(
                        f"{where}: unknown component {unknown[0]!r} in {rule.transform} (components: {available})"
                    )
            for component in components:
                if component in seen:
                    raise SymmetrySpecError(
                        f"{where}: component {component!r} is covered twice ({seen[component]} and {rule.transform})"
                    )
                seen[component] = rule.transform
            _check_rule(where, rule, components)
        resolved.append((rule, components or ()))
    if available is not None:
        missing = [c for c in available if c not in seen]
        if missing:
            raise SymmetrySpecError(f"{where}: component {missing[0]!r} is not covered by any transform")
    return resolved


def _check_rule(where: str, rule: Rule, components: tuple[str, ...]) -> None:
    if not components:
        raise SymmetrySpecError(f"{where}: {rule.transform} lists no components")
    if isinstance(rule, Rotate2D) and len(components) != 2:
        raise SymmetrySpecError(
            f"{where}: rotate2d needs exactly 2 components (x, y), got {len(components)}: {list(components)}"
        )
    if isinstance(rule, PermuteSign):
        targets = rule.mirror_to if rule.mirror_to is not None else components
        if len(targets) != len(components):
            raise SymmetrySpecError(
                f"{where}: permute_sign mirror_to has {len(targets)} entries for {len(components)} components"
            )
        if sorted(targets) != sorted(components):
            raise SymmetrySpecError(
                f"{where}: permute_sign mirror_to {list(targets)} is not a permutation of {list(components)}"
            )
        if len(rule.sign) != len(components):
            raise SymmetrySpecError(
                f"{where}: permute_sign has {len(rule.sign)} signs for {len(components)} components {list(components)}"
            )
        for component, sign in zip(components, rule.sign, strict=True):
            if sign not in (1.0, -1.0):
                raise SymmetrySpecError(f"{where}: permute_sign sign of {component!r} is {sign}; it must be +1 or -1")
        # Involution: applying the mirror twice must give the identity, signs included.
        image = {c: (t, s) for c, t, s in zip(components, targets, rule.sign, strict=True)}
        for component in components:
            middle, first = image[component]
            back, second = image[middle]
            if back != component or first * second != 1.0:
                raise SymmetrySpecError(
                    f"{where}: permute_sign is not an involution: mirroring {component!r} twice gives "
                    f"{'-' if first * second < 0 else ''}{back!r}"
                )


def _plan(
    section: Section,
    rules: Mapping[str, Sequence[Rule]],
    names: Sequence[str],
) -> _Plan:
    fields = _split_names(section, names)
    unknown = [field for field in rules if field not in fields]
    if unknown:
        raise SymmetrySpecError(f"{section} field {unknown[0]!r} is unknown ({section} fields: {list(fields)})")
    uncovered = [field for field in fields if field not in rules]
    if uncovered:
        raise SymmetrySpecError(f"{section} field {uncovered[0]!r} is not covered by the spec")
    index = {name: i for i, name in enumerate(names)}
    size = len(names)
    mirror_source = np.arange(size)
    mirror_sign = np.ones(size)
    partner = np.arange(size)
    sine_sign = np.zeros(size)
    rotated = np.zeros(size, dtype=bool)
    angle = np.zeros(size, dtype=bool)
    pairs: dict[str, tuple[int, int]] = {}
    for field, field_rules in rules.items():
        for rule, components in _resolve_field(section, field, field_rules, fields[field]):
            ids = [index[f"{field}.{c}"] for c in components]
            if isinstance(rule, Rotate2D):
                x, y = ids
                pairs[field] = (x, y)
                partner[x], partner[y] = y, x
                sine_sign[x], sine_sign[y] = -1.0, 1.0
                rotated[[x, y]] = True
                mirror_sign[y] = -1.0
            elif isinstance(rule, AngleShift):
                angle[ids] = True
                mirror_sign[ids] = -1.0
            elif isinstance(rule, PermuteSign):
                targets = rule.mirror_to if rule.mirror_to is not None else components
                for source, target, sign in zip(ids, targets, rule.sign, strict=True):
                    mirror_source[index[f"{field}.{target}"]] = source
                    mirror_sign[index[f"{field}.{target}"]] = sign
    return _Plan(mirror_source, mirror_sign, partner, sine_sign, rotated, angle, pairs)


# ----------------------------------------------------------------------------------------- group elements
def wrap_angle(angle: Tensor) -> Tensor:
    """Wrap angles to [-π, π): ``(a + π) mod 2π - π``."""
    return torch.remainder(angle + math.pi, 2.0 * math.pi) - math.pi


@dataclass(frozen=True)
class GroupElement:
    """A batch of group elements g = (θ, m) acting as ``g·v = R(θ) Mᵐ v`` (mirror first, then rotate).

    Attributes:
        angle: Rotation angles θ in rad, wrapped to [-π, π); 0 when the rotation group is absent.
        mirror: Mirror bits m (bool); False when the mirror group is absent.
    """

    angle: Tensor
    mirror: Tensor

    @property
    def shape(self) -> torch.Size:
        """The batch shape (of ``angle`` and ``mirror`` broadcast together)."""
        return torch.Size(np.broadcast_shapes(tuple(self.angle.shape), tuple(self.mirror.shape)))

    @classmethod
    def identity(
        cls, shape: Sequence[int] = (), *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> GroupElement:
        """The identity element (θ = 0, no mirror), repeated over ``shape``."""
        return cls(
            torch.zeros(tuple(shape), dtype=dtype, device=device),
            torch.zeros(tuple(shape), dtype=torch.bool, device=device),
        )

    @classmethod
    def of(
        cls, angle: ArrayLike | Tensor, mirror: ArrayLike | Tensor = False, *, dtype: torch.dtype = torch.float64
    ) -> GroupElement:
        """Build elements from numbers or arrays (angles wrapped to [-π, π))."""
        angle_t = torch.as_tensor(np.asarray(angle) if not isinstance(angle, Tensor) else angle, dtype=dtype)
        mirror_t = torch.as_tensor(np.asarray(mirror) if not isinstance(mirror, Tensor) else mirror, dtype=torch.bool)
        return cls(wrap_angle(angle_t), mirror_t.to(angle_t.device))


# ----------------------------------------------------------------------------------------- bound symmetry
class BoundSymmetry(nn.Module):
    """A :class:`SymmetrySpec` bound to concrete observation/action names: the batched group action.

    An ``nn.Module`` only to carry its index/sign buffers (``.to(device)`` moves them); it has no
    parameters and no ``forward``. Every ``act_*`` method also moves the buffers to its input's
    device and dtype, works on any leading batch shape and broadcasts the element's shape against
    it, and is traceable (``torch.export``/ONNX).

    Build it with :meth:`SymmetrySpec.bind`.
    """

    _obs_source: Tensor
    _obs_sign: Tensor
    _obs_partner: Tensor
    _obs_sine: Tensor
    _obs_rotated: Tensor
    _obs_angle: Tensor
    _act_source: Tensor
    _act_sign: Tensor
    _act_partner: Tensor
    _act_sine: Tensor
    _act_rotated: Tensor
    _act_angle: Tensor
    _discrete_mirror: Tensor

    def __init__(
        self,
        spec: SymmetrySpec,
        observation_names: Sequence[str],
        action_names: Sequence[str],
        discrete_action_table: NDArray[np.floating] | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self._observation_names = tuple(observation_names)
        self._action_names = tuple(action_names)
        observation = _plan("observation", spec.observation, self._observation_names)
        action = _plan("action", spec.action, self._action_names)
        self._pairs = observation.pairs
        for prefix, plan in (("_obs", observation), ("_act", action)):
            self.register_buffer(f"{prefix}_source", torch.as_tensor(plan.mirror_source), persistent=False)
            self.register_buffer(f"{prefix}_sign", torch.as_tensor(plan.mirror_sign), persistent=False)
            self.register_buffer(f"{prefix}_partner", torch.as_tensor(plan.partner), persistent=False)
            self.register_buffer(f"{prefix}_sine", torch.as_tensor(plan.sine_sign), persistent=False)
            self.register_buffer(f"{prefix}_rotated", torch.as_tensor(plan.rotated), persistent=False)
            self.register_buffer(f"{prefix}_angle", torch.as_tensor(plan.angle), persistent=False)
        rotation_moves_actions = spec.has_rotation and bool(action.rotated.any() or action.angle.any())
        mirror_moves_actions = spec.has_mirror and not (
            np.array_equal(action.mirror_source, np.arange(len(self._action_names))) and (action.mirror_sign == 1).all()
        )
        self._actions_invariant = not (rotation_moves_actions or mirror_moves_actions)
        self._rotation_moves_actions = rotation_moves_actions
        self.table: NDArray[np.float64] | None = None
        self.register_buffer("_discrete_mirror", self._discrete_mirror_map(discrete_action_table), persistent=False)
        check_group_laws(self)

    # ------------------------------------------------------------------------- properties
    @property
    def observation_names(self) -> tuple[str, ...]:
        """Component names of the observation vector this symmetry is bound to."""
        return self._observation_names

    @property
    def action_names(self) -> tuple[str, ...]:
        """Component names of the action vector this symmetry is bound to."""
        return self._action_names

    @property
    def has_rotation(self) -> bool:
        """True when the rotation group SO(2) acts."""
        return self.spec.has_rotation

    @property
    def has_mirror(self) -> bool:
        """True when the mirror group Z2 acts."""
        return self.spec.has_mirror

    @property
    def actions_invariant(self) -> bool:
        """True when every group element leaves every action unchanged (e.g. the reacher's torques under SO(2))."""
        return self._actions_invariant

    @property
    def observation_angle_names(self) -> tuple[str, ...]:
        """Observation components that are angles (angle_shift): compared on the circle, output wrapped."""
        return tuple(
            n for n, is_angle in zip(self._observation_names, self._obs_angle.tolist(), strict=True) if is_angle
        )

    @property
    def action_angle_names(self) -> tuple[str, ...]:
        """Action components that are angles (angle_shift)."""
        return tuple(n for n, is_angle in zip(self._action_names, self._act_angle.tolist(), strict=True) if is_angle)

    @property
    def discrete(self) -> bool:
        """True when bound with a discrete action table."""
        return self.table is not None

    @property
    def n_discrete_actions(self) -> int:
        """Number of discrete actions (0 for continuous actions)."""
        return 0 if self.table is None else len(self.table)

    @property
    def discrete_mirror_permutation(self) -> Tensor:
        """For discrete actions, index i ↦ the index of its mirror image (identity without mirror)."""
        return self._discrete_mirror

    @property
    def rotate2d_fields(self) -> tuple[str, ...]:
        """The observation fields the rotation turns as (x, y) pairs."""
        return tuple(self._pairs)

    def rotate2d_indices(self, field: str) -> tuple[int, int]:
        """Observation indices (x, y) of a rotate2d field.

        Raises:
            SymmetrySpecError: If ``field`` is not a rotate2d observation field.
        """
        if field not in self._pairs:
            raise SymmetrySpecError(
                f"observation field {field!r} is not a rotate2d pair (rotate2d fields: {sorted(self._pairs)})"
            )
        return self._pairs[field]

    # ------------------------------------------------------------------------- group operations
    def sample(
        self,
        batch_shape: Sequence[int],
        generator: torch.Generator,
        *,
        full_group: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> GroupElement:
        """Draw group elements for training (or for measuring equivariance on held-out rotations).

        Training draws θ = 2πk/n with k uniform in {0, …, n-1} (``rotation.sampling: cyclic``) or
        θ uniform on [-π, π) (``continuous``), and m uniform in {0, 1} when the mirror group is
        listed. ``full_group=True`` draws θ uniformly from SO(2) whatever the sampling.

        Args:
            batch_shape: Shape of the batch of elements.
            generator: The random source; elements are created on its device.
            full_group: Draw from the whole group instead of the training subgroup.
            dtype: Floating dtype of the angles.

        Returns:
            Elements of shape ``batch_shape``.
        """
        shape, device = tuple(batch_shape), generator.device
        angle = torch.zeros(shape, dtype=torch.float64, device=device)
        if self.has_rotation:
            if full_group or self.spec.rotation.sampling == "continuous":
                angle = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
                angle = wrap_angle((2.0 * angle - 1.0) * math.pi)
            else:
                order = self.spec.rotation.order
                k = torch.randint(order, shape, generator=generator, device=device)
                angle = wrap_angle(k.to(torch.float64) * (2.0 * math.pi / order))
        mirror = torch.zeros(shape, dtype=torch.bool, device=device)
        if self.has_mirror:
            mirror = torch.randint(2, shape, generator=generator, device=device).bool()
        return GroupElement(angle.to(dtype), mirror)

    def compose(self, g: GroupElement, h: GroupElement) -> GroupElement:
        """The product gh (apply h first): ``(θ₁ + (-1)^{m₁} θ₂, m₁ ⊕ m₂)``."""
        angle = g.angle + torch.where(g.mirror, -h.angle, h.angle)
        return GroupElement(wrap_angle(angle), torch.logical_xor(g.mirror, h.mirror))

    def invert(self, g: GroupElement) -> GroupElement:
        """The inverse g⁻¹: ``(-θ, 0)`` for a rotation, ``(θ, 1)`` for a reflection (its own inverse)."""
        return GroupElement(wrap_angle(torch.where(g.mirror, g.angle, -g.angle)), g.mirror.clone())

    # ------------------------------------------------------------------------- actions on vectors
    def act_observation(self, observation: Tensor, g: GroupElement) -> Tensor:
        """g·o for observations of shape ``(..., D)``; g broadcasts against the leading shape."""
        return self._act(observation, g, "_obs", len(self._observation_names))

    def act_action(self, action: Tensor, g: GroupElement) -> Tensor:
        """g·a for continuous action vectors of shape ``(..., A)`` (or rows of the discrete table)."""
        return self._act(action, g, "_act", len(self._action_names))

    def act_discrete_action(self, index: Tensor, g: GroupElement) -> Tensor:
        """g·i for discrete action indices: the index whose table row equals g·(row i).

        Discrete tables must be rotation-invariant (checked on bind), so only the mirror bit
        matters: ``where(m, P[i], i)`` with P the mirror permutation of the table.

        Raises:
            SymmetrySpecError: If the symmetry was bound without a discrete action table.
        """
        if self.table is None:
            raise SymmetrySpecError("act_discrete_action needs a symmetry bound with a discrete_action_table")
        permutation = self._discrete_mirror.to(index.device)
        return torch.where(g.mirror.to(index.device), permutation[index], index)

    def _act(self, vector: Tensor, g: GroupElement, prefix: str, size: int) -> Tensor:
        if not vector.is_floating_point():
            raise TypeError(f"the vector must be floating point, got {vector.dtype}")
        tracing = bool(torch._C._get_tracing_state())  # shapes are traced values then (ONNX export): skip the check
        if not tracing and vector.shape[-1] != size:
            raise ValueError(f"expected a vector of shape (..., {size}), got {tuple(vector.shape)}")
        device, dtype = vector.device, vector.dtype

        def buffer(name: str, as_dtype: torch.dtype | None = None) -> Tensor:
            value: Tensor = getattr(self, f"{prefix}_{name}")
            return value.to(device=device, dtype=as_dtype or value.dtype)

        angle = g.angle.to(device=device, dtype=dtype).unsqueeze(-1)
        mirror = g.mirror.to(device).unsqueeze(-1)
        # Mirror first: a signed permutation (M v)_j = s_j v[p(j)].
        mirrored = vector.index_select(-1, buffer("source")) * buffer("sign", dtype)
        out = torch.where(mirror, mirrored, vector)
        # Then rotate: rotate2d pairs v_j → cos θ v_j + σ_j sin θ v_partner(j); angles q → wrap(q + θ).
        rotated = buffer("rotated")
        cosine = torch.where(rotated, torch.cos(angle), torch.ones_like(angle))
        out = out * cosine + out.index_select(-1, buffer("partner")) * (buffer("sine", dtype) * torch.sin(angle))
        is_angle = buffer("angle")
        return torch.where(is_angle, wrap_angle(out + angle), out)

    # ------------------------------------------------------------------------- numpy conveniences
    def act_observation_np(
        self, observation: ArrayLike, angle: ArrayLike, mirror: ArrayLike = False
    ) -> NDArray[np.float64]:
        """:meth:`act_observation` in float64 numpy (same implementation)."""
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float64))
        return self.act_observation(obs, GroupElement.of(angle, mirror)).numpy()

    def act_action_np(self, action: ArrayLike, angle: ArrayLike, mirror: ArrayLike = False) -> NDArray[np.float64]:
        """:meth:`act_action` in float64 numpy (same implementation)."""
        act = torch.as_tensor(np.asarray(action, dtype=np.float64))
        return self.act_action(act, GroupElement.of(angle, mirror)).numpy()

    def act_discrete_action_np(
        self, index: ArrayLike, angle: ArrayLike, mirror: ArrayLike = False
    ) -> NDArray[np.int64]:
        """:meth:`act_discrete_action` on numpy indices (same implementation)."""
        indices = torch.as_tensor(np.asarray(index, dtype=np.int64))
        result: NDArray[np.int64] = self.act_discrete_action(indices, GroupElement.of(angle, mirror)).numpy()
        return result

    # ------------------------------------------------------------------------- discrete actions
    def _discrete_mirror_map(self, table: NDArray[np.floating] | None) -> Tensor:
        if table is None:
            return torch.zeros(0, dtype=torch.int64)
        rows = np.asarray(table, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(self._action_names):
            raise SymmetrySpecError(
                f"discrete_action_table must have shape (n_actions, {len(self._action_names)}) "
                f"for actions {list(self._action_names)}, got {rows.shape}"
            )
        if self._rotation_moves_actions:
            raise SymmetrySpecError(
                "discrete action table is not closed under the group: the action fields rotate, and a finite "
                "table cannot be closed under continuous rotation; make the action fields rotation-invariant"
            )
        self.table = rows
        permutation = np.arange(len(rows))
        if self.has_mirror:
            mirrored = self.act_action_np(rows, 0.0, True)
            scale = max(float(np.abs(rows).max()), 1.0)
            distance = np.abs(mirrored[:, None, :] - rows[None, :, :]).max(axis=2)
            permutation = distance.argmin(axis=1)
            unmatched = np.flatnonzero(distance.min(axis=1) > ACTION_MATCH_TOLERANCE * scale)
            if len(unmatched):
                i = int(unmatched[0])
                raise SymmetrySpecError(
                    f"discrete action table is not closed under the group: the mirror image {mirrored[i].tolist()} "
                    f"of action {i} {rows[i].tolist()} is not in the table"
                )
            if len(set(permutation.tolist())) != len(rows):
                raise SymmetrySpecError("discrete action table has duplicate rows: the mirror is not a permutation")
        return torch.as_tensor(permutation, dtype=torch.int64)


# ----------------------------------------------------------------------------------------- law checks
def _angular_gap(a: Tensor, b: Tensor, is_angle: Tensor) -> Tensor:
    """|a - b| component-wise, measured on the circle for angle components."""
    gap = a - b
    return torch.where(is_angle, wrap_angle(gap), gap).abs()


def check_group_laws(symmetry: BoundSymmetry, samples: int = 64, seed: int = 0) -> None:
    """Numerically check the group laws of a bound symmetry on random elements and vectors (float64).

    For g, h drawn from the full group and random vectors v (angles uniform on the circle):
    identity ``e·v = v``; inverse ``g⁻¹·(g·v) = v``; composition ``g·(h·v) = (gh)·v``; mirror
    involution ``m·(m·v) = v``; and the non-angle part of every g is an orthogonal linear map
    (``L(g) L(g)ᵀ = I``), so distances such as the goal distance are preserved. Discrete actions
    are checked for the same identity, inverse and composition laws on every index.

    Raises:
        SymmetrySpecError: Naming the law, the section and the worst component.
    """
    generator = torch.Generator().manual_seed(seed)
    g = symmetry.sample((samples,), generator, full_group=True, dtype=torch.float64)
    h = symmetry.sample((samples,), generator, full_group=True, dtype=torch.float64)
    identity = GroupElement.identity((samples,), dtype=torch.float64)
    mirror = GroupElement(torch.zeros(samples, dtype=torch.float64), torch.ones(samples, dtype=torch.bool))
    sections = (
        ("observation", symmetry.observation_names, symmetry.act_observation, symmetry._obs_angle),
        ("action", symmetry.action_names, symmetry.act_action, symmetry._act_angle),
    )
    for section, names, act, is_angle in sections:
        size = len(names)
        v = 3.0 * torch.randn((samples, size), generator=generator, dtype=torch.float64)
        v = torch.where(is_angle, wrap_angle(v), v)
        laws: list[tuple[str, Tensor, Tensor]] = [
            ("identity", act(v, identity), v),
            ("inverse", act(act(v, g), symmetry.invert(g)), v),
            ("composition", act(act(v, h), g), act(v, symmetry.compose(g, h))),
        ]
        if symmetry.has_mirror:
            laws.append(("mirror involution", act(act(v, mirror), mirror), v))
        for law, left, right in laws:
            gap = _angular_gap(left, right, is_angle).amax(dim=0)
            if float(gap.max()) > LAW_TOLERANCE:
                worst = names[int(gap.argmax())]
                raise SymmetrySpecError(f"{section}: {law} law violated by {float(gap.max()):.3g} at {worst!r}")
        linear = ~is_angle
        if bool(linear.any()):
            basis = torch.eye(size, dtype=torch.float64)[linear]  # unit vectors of the linear components
            images = act(basis.unsqueeze(0).expand(samples, -1, -1), GroupElement(g.angle[:, None], g.mirror[:, None]))
            matrix = images[..., linear]  # (samples, k, k): row i = image of unit vector i
            gram = matrix @ matrix.transpose(-1, -2)
            error = (gram - torch.eye(int(linear.sum()), dtype=torch.float64)).abs().max()
            if float(error) > LAW_TOLERANCE:
                raise SymmetrySpecError(
                    f"{section}: the linear part of the action is not orthogonal (error {float(error):.3g})"
                )
    if symmetry.discrete:
        indices = torch.arange(symmetry.n_discrete_actions)[None, :].expand(samples, -1)
        gs = GroupElement(g.angle[:, None], g.mirror[:, None])
        hs = GroupElement(h.angle[:, None], h.mirror[:, None])
        act_i = symmetry.act_discrete_action
        checks = {
            "identity": (act_i(indices, GroupElement(identity.angle[:, None], identity.mirror[:, None])), indices),
            "inverse": (act_i(act_i(indices, gs), symmetry.invert(gs)), indices),
            "composition": (act_i(act_i(indices, hs), gs), act_i(indices, symmetry.compose(gs, hs))),
        }
        for law, (left, right) in checks.items():
            if not torch.equal(left, right):
                raise SymmetrySpecError(f"discrete actions: {law} law violated")
