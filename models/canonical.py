"""Canonical mode: symmetry by construction, by running a network in a canonical frame.

For the rotation group, the frame is set by one rotate2d observation field (the goal, by default):
with φ = atan2(y, x) its bearing, the observation is rotated by g(-φ) so that the field lies on
the +x axis, the network runs there, and its output is mapped back by g(φ):

    f(o) = ρ(g(φ)) · net(g(-φ)·o),

where ρ is the identity for invariant outputs and the action map for equivariant actions. Because
φ(R(α)·o) = φ(o) + α, the canonical input g(-φ)·o is the same for every rotation of o, so f is
exactly SO(2)-invariant (or equivariant) for *any* network — no training signal needed. The only
exceptions are a zero frame vector (atan2 undefined; φ = 0 is used) and the ±π seam of wrapped
angles, which is a discontinuity of the observation itself.

For the finite mirror group the output is averaged over the orbit {e, m} of the canonical input,
each term mapped back to the original frame:

    f(o) = ρ(g(φ)) · ½ Σ_{m ∈ {0, 1}} ρ(Mᵐ) net(Mᵐ g(-φ)·o).

Canonicalisation commutes with the mirror (g(-φ(Mo))·Mo = M g(-φ)·o), so this is invariant under
the whole group. Outputs are averaged arithmetically: for ``output="discrete"`` logits this is the
mean of log-probabilities (up to a per-sample constant that softmax removes), i.e. the normalised
geometric mean of the orbit's distributions; for Q-values it is the mean Q-value.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from models.symmetry import BoundSymmetry, GroupElement, SymmetrySpecError

#: What a wrapped network outputs, and so how the group acts on it.
CanonicalOutput = Literal["invariant", "action", "discrete"]


class CanonicalWrapper(nn.Module):
    """Wraps a network so that it is invariant/equivariant under a symmetry by construction.

    Args:
        net: The network, ``(..., D) → (..., K)``; it must accept any leading batch shape (an extra
            leading dimension of 2 is added for the mirror orbit), like ``nn.Linear``.
        symmetry: The bound symmetry of the observations (and actions).
        frame_field: The rotate2d observation field whose bearing defines the canonical frame.
        output: ``invariant`` (values, invariant torques: unchanged by the group), ``action``
            (a continuous action vector, ``K = A``: mapped back with the action map) or
            ``discrete`` (``K = n_actions`` logits or Q-values: indices relabelled by the group).

    Raises:
        SymmetrySpecError: ``frame_field`` is not a rotate2d field while rotation acts; ``discrete``
            output without a discrete action table; ``action`` output averaging wrapped angles.
    """

    def __init__(
        self,
        net: nn.Module,
        symmetry: BoundSymmetry,
        frame_field: str = "goal_position",
        output: CanonicalOutput = "invariant",
    ) -> None:
        super().__init__()
        if output not in ("invariant", "action", "discrete"):
            raise SymmetrySpecError(f"output must be invariant, action or discrete, got {output!r}")
        self.net = net
        self.symmetry = symmetry
        self.frame_field = frame_field
        self.output: CanonicalOutput = output
        self._frame = symmetry.rotate2d_indices(frame_field) if symmetry.has_rotation else (0, 0)
        if output == "discrete" and not symmetry.discrete:
            raise SymmetrySpecError("output='discrete' needs a symmetry bound with a discrete_action_table")
        if output == "action" and symmetry.has_mirror and symmetry.action_angle_names:
            raise SymmetrySpecError(
                "output='action' cannot average angle_shift action components over the mirror orbit "
                "(the mean of wrapped angles is not an angle); use rotate2d or permute_sign actions"
            )

    def frame_angle(self, observation: Tensor) -> Tensor:
        """φ = atan2(y, x) of the frame field, shape ``observation.shape[:-1]`` (0 without rotation)."""
        if not self.symmetry.has_rotation:
            return torch.zeros_like(observation[..., 0])
        x, y = self._frame
        return torch.atan2(observation[..., y], observation[..., x])

    def canonicalize(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        """The observation rotated into the canonical frame, ``g(-φ)·o``, and φ."""
        angle = self.frame_angle(observation)
        if not self.symmetry.has_rotation:
            return observation, angle
        no_mirror = torch.zeros_like(angle, dtype=torch.bool)
        return self.symmetry.act_observation(observation, GroupElement(-angle, no_mirror)), angle

    def forward(self, observation: Tensor) -> Tensor:
        """The symmetrised output for observations of shape ``(..., D)``."""
        canonical, angle = self.canonicalize(observation)
        no_mirror = torch.zeros_like(angle, dtype=torch.bool)
        if self.symmetry.has_mirror:
            mirror = GroupElement(torch.zeros_like(angle), torch.ones_like(no_mirror))
            both = torch.stack([canonical, self.symmetry.act_observation(canonical, mirror)])
            outputs = self.net(both)
            plain, mirrored = outputs[0], outputs[1]
            if self.output == "action":
                mirrored = self.symmetry.act_action(mirrored, mirror)
            elif self.output == "discrete":  # value of action i = value of its mirror image in the mirrored world
                permutation = self.symmetry.discrete_mirror_permutation.to(mirrored.device)
                mirrored = mirrored.index_select(-1, permutation)
            result: Tensor = 0.5 * (plain + mirrored)
        else:
            result = self.net(canonical)
        if self.output == "action" and self.symmetry.has_rotation:
            result = self.symmetry.act_action(result, GroupElement(angle, no_mirror))
        return result
