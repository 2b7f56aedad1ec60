"""Policy inputs computed from raw, named observation signals, inside the network.

The robot reports raw signals (joint angles, joint velocities, the goal position) and the
dataset stores them under component names such as ``joint_position.shoulder``. The features the
policy sees are computed from those *names*, never from positions in the vector, and the
computation is a module of the network, so it is exported into the ONNX graph together with the
normaliser: the robot feeds the same raw signals it logged and nothing is re-implemented on it.

Modules here act on the last dimension and accept any leading dimensions (``(E, B, D)`` for an
ensemble).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # only the type: the models package does not import the simulator at run time
    from sim.robot import RobotDescription

#: Default floor of the normaliser's standard deviation.
MIN_STD = 1e-6


def observation_indices(observation_names: Sequence[str], wanted: Sequence[str]) -> list[int]:
    """Positions of named components in the observation vector.

    Args:
        observation_names: Name of every observation component, in vector order.
        wanted: Names to look up.

    Returns:
        The index of each wanted name, in the order of ``wanted``.

    Raises:
        ValueError: If the observation names repeat or a wanted name is missing (the message
            lists the names that are available).
    """
    names = list(observation_names)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"observation names must be unique, repeated: {duplicates}")
    missing = [name for name in wanted if name not in names]
    if missing:
        raise ValueError(f"observation components {missing} not found; the observation has {names}")
    return [names.index(name) for name in wanted]


class FeatureExtractor(nn.Module):
    """Base class of feature modules: raw observation ``(..., D)`` → features ``(..., F)``.

    Attributes:
        observation_names: Names of the raw observation components, in vector order (length D).
        feature_names: Names of the output features, in vector order (length F).
    """

    observation_names: tuple[str, ...]
    feature_names: tuple[str, ...]

    @property
    def in_features(self) -> int:
        """Raw observation width D."""
        return len(self.observation_names)

    @property
    def out_features(self) -> int:
        """Feature width F."""
        return len(self.feature_names)


class ReacherFeatures(FeatureExtractor):
    r"""The paper's target-centred arm points plus the joint velocities.

    With joint angles :math:`q_1` (shoulder), :math:`q_2` (elbow), link lengths :math:`l_1, l_2`
    and goal :math:`g` in the base frame (the shoulder is the base origin):

    .. math::

        p_s = 0,\quad p_e = l_1 (\cos q_1, \sin q_1),\quad
        p_h = p_e + l_2 (\cos(q_1 + q_2), \sin(q_1 + q_2)),

    and the features are :math:`(p_s - g,\ p_e - g,\ p_h - g,\ \dot q_1,\ \dot q_2)` (8 numbers).
    A change of context by θ (shoulder angle :math:`q_1 + θ`, goal :math:`R_θ g`) maps every
    point to :math:`R_θ (p - g)` and leaves the velocities unchanged, so rotations act on the
    features as the block-diagonal :math:`\mathrm{diag}(R_θ, R_θ, R_θ, 1, 1)`.

    Attributes:
        link_lengths: Shoulder→elbow and elbow→hand distances in m.
        joint_names: Shoulder and elbow joint names.
        signal_indices: Observation indices of the shoulder and elbow positions, their velocities,
            and the goal's x and y, in that order.
    """

    #: The arm points whose goal-relative ``(x, y)`` are the features, in feature order.
    POINTS = ("shoulder", "elbow", "hand")

    def __init__(
        self,
        observation_names: Sequence[str],
        link_lengths: tuple[float, float],
        *,
        joint_names: tuple[str, str],
    ) -> None:
        """Look the six raw signals up by name.

        Args:
            observation_names: Names of the raw observation components, in vector order; must
                contain ``joint_position.<j>`` and ``joint_velocity.<j>`` for both joints and
                ``goal_position.x``, ``goal_position.y`` (any order, other components ignored).
            link_lengths: ``(l1, l2)`` in m, e.g. ``RobotDescription.link_lengths``.
            joint_names: The base (shoulder) and second (elbow) joint's names, e.g. ``RobotDescription.joint_names``.

        Raises:
            ValueError: If a signal is missing or a link length is not positive.
        """
        super().__init__()
        if len(link_lengths) != 2 or min(link_lengths) <= 0:
            raise ValueError(f"link_lengths must be two positive lengths, got {link_lengths}")
        shoulder, elbow = joint_names
        self.observation_names = tuple(observation_names)
        self.joint_names = (shoulder, elbow)
        self.link_lengths = (float(link_lengths[0]), float(link_lengths[1]))
        self.signal_indices = tuple(
            observation_indices(
                self.observation_names,
                (
                    f"joint_position.{shoulder}",
                    f"joint_position.{elbow}",
                    f"joint_velocity.{shoulder}",
                    f"joint_velocity.{elbow}",
                    "goal_position.x",
                    "goal_position.y",
                ),
            )
        )
        (
            self._shoulder_position,
            self._elbow_position,
            self._shoulder_velocity,
            self._elbow_velocity,
            self._goal_x,
            self._goal_y,
        ) = self.signal_indices
        self.feature_names = (
            *(f"{point}_from_goal.{axis}" for point in self.POINTS for axis in ("x", "y")),
            f"joint_velocity.{shoulder}",
            f"joint_velocity.{elbow}",
        )

    @classmethod
    def from_robot(cls, robot: RobotDescription, observation_names: Sequence[str]) -> ReacherFeatures:
        """Features for a robot description (its link lengths and joint names).

        Args:
            robot: The arm, e.g. ``sim.robot.load_robot_description()``.
            observation_names: Names of the raw observation components, in vector order.

        Returns:
            The feature module.
        """
        shoulder, elbow = robot.joint_names
        return cls(observation_names, robot.link_lengths, joint_names=(shoulder, elbow))

    def forward(self, observation: Tensor) -> Tensor:
        """Compute the features.

        Args:
            observation: Raw observations of shape ``(..., D)``.

        Returns:
            Features of shape ``(..., 8)``, ordered as ``feature_names``.
        """
        l1, l2 = self.link_lengths
        q1 = observation[..., self._shoulder_position]
        q12 = q1 + observation[..., self._elbow_position]
        goal_x = observation[..., self._goal_x]
        goal_y = observation[..., self._goal_y]
        elbow_x = l1 * torch.cos(q1)
        elbow_y = l1 * torch.sin(q1)
        hand_x = elbow_x + l2 * torch.cos(q12)
        hand_y = elbow_y + l2 * torch.sin(q12)
        return torch.stack(
            [
                -goal_x,
                -goal_y,
                elbow_x - goal_x,
                elbow_y - goal_y,
                hand_x - goal_x,
                hand_y - goal_y,
                observation[..., self._shoulder_velocity],
                observation[..., self._elbow_velocity],
            ],
            dim=-1,
        )


class GenericFeatures(FeatureExtractor):
    """Angles become ``(cos, sin)`` pairs; every other component passes through unchanged.

    The output keeps the observation order, with each angle component ``a`` replaced in place by
    ``a.cos``, ``a.sin``. This removes the 2π wrap-around discontinuity of angle signals.
    """

    gather_index: Tensor
    angle_index: Tensor
    order: Tensor

    def __init__(self, observation_names: Sequence[str], angle_components: Sequence[str]) -> None:
        """Look the angle components up by name.

        Args:
            observation_names: Names of the raw observation components, in vector order.
            angle_components: Names of the components that are angles in rad.

        Raises:
            ValueError: If the names repeat or an angle component is missing.
        """
        super().__init__()
        self.observation_names = tuple(observation_names)
        angles = set(observation_indices(self.observation_names, angle_components))
        if len(angles) != len(angle_components):
            raise ValueError(f"angle components must be unique, got {list(angle_components)}")
        passthrough = [i for i in range(len(self.observation_names)) if i not in angles]
        angle_list = [i for i in range(len(self.observation_names)) if i in angles]
        # Computed as [passthrough | cos(angles) | sin(angles)], then permuted into observation order.
        computed = [
            *(self.observation_names[i] for i in passthrough),
            *(f"{self.observation_names[i]}.cos" for i in angle_list),
            *(f"{self.observation_names[i]}.sin" for i in angle_list),
        ]
        names: list[str] = []
        for i, name in enumerate(self.observation_names):
            names.extend([f"{name}.cos", f"{name}.sin"] if i in angles else [name])
        self.feature_names = tuple(names)
        self.angle_components = tuple(self.observation_names[i] for i in angle_list)
        # Index buffers follow the module across devices; they derive from the names given here,
        # so they are not persistent (a checkpoint must not overwrite the name lookup).
        self.register_buffer("gather_index", torch.tensor(passthrough, dtype=torch.long), persistent=False)
        self.register_buffer("angle_index", torch.tensor(angle_list, dtype=torch.long), persistent=False)
        self.register_buffer(
            "order", torch.tensor([computed.index(name) for name in names], dtype=torch.long), persistent=False
        )

    def forward(self, observation: Tensor) -> Tensor:
        """Compute the features.

        Args:
            observation: Raw observations of shape ``(..., D)``.

        Returns:
            Features of shape ``(..., D + number of angles)``, ordered as ``feature_names``.
        """
        angles = observation.index_select(-1, self.angle_index)
        computed = torch.cat(
            [observation.index_select(-1, self.gather_index), torch.cos(angles), torch.sin(angles)], dim=-1
        )
        return computed.index_select(-1, self.order)


class Normalizer(nn.Module):
    r"""Per-feature standardisation :math:`(x - μ) / σ` with statistics fitted on data.

    ``mean`` and ``std`` are registered buffers: they are saved in the ``state_dict`` with the
    weights and exported into the ONNX graph. Until :meth:`fit` is called the map is the identity
    (``fitted`` is ``False``).

    Attributes:
        size: Feature width.
        min_std: Floor of σ, so that a constant feature maps to 0 instead of dividing by 0.
        mean: Buffer of shape ``(size,)``.
        std: Buffer of shape ``(size,)``.
        fitted: Boolean scalar buffer, ``True`` once :meth:`fit` has run.
    """

    mean: Tensor
    std: Tensor
    fitted: Tensor

    def __init__(self, size: int, *, min_std: float = MIN_STD) -> None:
        """Create an identity normaliser.

        Args:
            size: Feature width ≥ 1.
            min_std: Floor of the fitted standard deviation (> 0).

        Raises:
            ValueError: On a non-positive size or floor.
        """
        super().__init__()
        if size < 1 or not min_std > 0:
            raise ValueError(f"size must be ≥ 1 and min_std > 0, got {size}, {min_std}")
        self.size = size
        self.min_std = min_std
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, features: Tensor, names: Sequence[str] | None = None) -> None:
        r"""Set the statistics from data: :math:`μ = \bar x`, :math:`σ = \max(\mathrm{std}(x), σ_{min})`.

        σ is the population standard deviation (no Bessel correction), so the normalised data has
        exactly zero mean and unit standard deviation in every non-constant feature. A feature
        that is constant in the data maps to 0 and then amplifies any later deviation by
        ``1 / min_std`` (a warning names it): fit on data that covers every state the network
        will see. Data from a single context is the typical case: the target-centred shoulder
        point is constant there, so fit on the observations *and* their symmetry-transformed
        copies (the orbit under the training group), never on the raw single-context data alone.

        Args:
            features: Data of shape ``(..., size)``; every leading dimension is a sample.
            names: Feature names for the constant-feature warning (indices when ``None``).

        Warns:
            UserWarning: If a feature's standard deviation is below ``min_std``.

        Raises:
            ValueError: On a wrong width, no sample, or a non-finite value.
        """
        if features.shape[-1] != self.size:
            raise ValueError(f"expected features of width {self.size}, got shape {tuple(features.shape)}")
        flat = features.detach().reshape(-1, self.size).to(torch.float64)
        if flat.shape[0] == 0:
            raise ValueError("cannot fit a normaliser on zero samples")
        if not bool(torch.isfinite(flat).all()):
            raise ValueError("cannot fit a normaliser on non-finite values (NaN or inf)")
        std = flat.std(dim=0, correction=0)
        constant = [i for i in range(self.size) if float(std[i]) < self.min_std]
        if constant:
            labels = [names[i] for i in constant] if names is not None else constant
            warnings.warn(
                f"features {labels} are constant in the fitting data: they normalise to 0 and any other value "
                f"is amplified by 1/min_std = {1 / self.min_std:.3g}; fit on data covering every state "
                "(e.g. including the symmetry-transformed observations)",
                stacklevel=2,
            )
        with torch.no_grad():
            self.mean.copy_(flat.mean(dim=0))
            self.std.copy_(std.clamp_min(self.min_std))
            self.fitted.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        """Standardise.

        Args:
            x: Features of shape ``(..., size)``.

        Returns:
            ``(x − mean) / std``, same shape.
        """
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        """Summary shown by ``print(module)``."""
        return f"size={self.size}, min_std={self.min_std}"


class ObservationEncoder(nn.Module):
    """Raw observation → normalised features: ``normalizer(features(observation))``.

    One encoder is shared by all networks of a run (actor, critics, their targets, value); it has no
    trainable parameters, only the normaliser's buffers, which every network's ``state_dict`` carries.
    Within :meth:`reuse` it encodes each observation tensor once however many networks read it.

    Attributes:
        features: The feature module, raw ``(..., D)`` → ``(..., F)``.
        normalizer: The normaliser of the F features.
    """

    #: ``(observation, its version, its features)`` of the tensors encoded within :meth:`reuse`, else None.
    _reused: list[tuple[Tensor, int, Tensor]] | None = None

    def __init__(self, features: nn.Module, normalizer: Normalizer) -> None:
        """Combine a feature module with its normaliser.

        Args:
            features: Maps raw observations ``(..., D)`` to features ``(..., F)``; if it has an
                ``out_features`` attribute it must equal ``normalizer.size``.
            normalizer: Normaliser of width F.

        Raises:
            ValueError: If the widths disagree.
        """
        super().__init__()
        width = getattr(features, "out_features", normalizer.size)
        if width != normalizer.size:
            raise ValueError(f"features give {width} values but the normaliser has size {normalizer.size}")
        self.features = features
        self.normalizer = normalizer

    @classmethod
    def from_features(cls, features: FeatureExtractor, *, min_std: float = MIN_STD) -> ObservationEncoder:
        """An encoder with an identity (not yet fitted) normaliser of the right width.

        Args:
            features: The feature module.
            min_std: Floor of the normaliser's standard deviation.

        Returns:
            The encoder; call :meth:`fit` before training.
        """
        return cls(features, Normalizer(features.out_features, min_std=min_std))

    @property
    def out_features(self) -> int:
        """Width F of the encoded features."""
        return self.normalizer.size

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the encoded features (``feature_i`` if the feature module has none)."""
        names = getattr(self.features, "feature_names", None)
        return tuple(names) if names is not None else tuple(f"feature_{i}" for i in range(self.out_features))

    def fit(self, raw_observations: Tensor) -> None:
        """Fit the normaliser on the features of raw observations.

        Args:
            raw_observations: Raw observations of shape ``(..., D)``. Include every state the
                networks will be trained on, e.g. the symmetry-augmented copies (see
                :meth:`Normalizer.fit`).
        """
        with torch.no_grad():
            features: Tensor = self.features(raw_observations)
        self.normalizer.fit(features, self.feature_names)

    @contextmanager
    def reuse(self) -> Iterator[None]:
        """Within the block, encode each observation tensor once (a training update's s and s′).

        A tensor is recognised by identity and its in-place version counter, so a tensor modified in
        place is encoded again. Observations that require grad are never reused (their features
        carry a graph). The encoder has no trainable parameters, so a reused encoding equals a
        fresh one.
        """
        previous, self._reused = self._reused, []
        try:
            yield
        finally:
            self._reused = previous

    def forward(self, observation: Tensor) -> Tensor:
        """Encode.

        Args:
            observation: Raw observations of shape ``(..., D)``.

        Returns:
            Normalised features of shape ``(..., F)``.
        """
        reused = self._reused
        if reused is None or observation.requires_grad:
            return self._encode(observation)
        for seen, version, encoded in reused:
            if seen is observation and seen._version == version:
                return encoded
        encoded = self._encode(observation)
        reused.append((observation, observation._version, encoded))
        return encoded

    def _encode(self, observation: Tensor) -> Tensor:
        features: Tensor = self.features(observation)
        normalized: Tensor = self.normalizer(features)
        return normalized
