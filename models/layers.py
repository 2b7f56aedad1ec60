"""Ensemble layers: E independent networks evaluated as one batched model.

Training E seeds of the same network one after the other wastes the accelerator; stacking them
into one module with a leading *member* dimension runs them as a single batched matrix product.
Every tensor here is laid out ``(E, *batch, features)``: member ``i`` only ever reads row ``i`` of
the input and its own slice of the parameters, so the members are exactly as independent as E
separate runs (no parameter, gradient or activation is shared). E = 1 is a single run.

Initialisation follows :class:`torch.nn.Linear` and is drawn *per member* from that member's own
:class:`torch.Generator`, so member ``i`` of an E-member ensemble is bit-for-bit the 1-member
ensemble built from the same generator state: adding seeds to a run never changes the existing
ones.

Everything is traceable by ``torch.onnx.export``: ``forward`` has no data-dependent control flow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn


def member_generators(generators: Sequence[torch.Generator] | None, members: int) -> list[torch.Generator | None]:
    """One generator (or ``None``: the global RNG) per member, after checking the count.

    Args:
        generators: One generator per member, or ``None`` to draw everything from the global RNG.
        members: Ensemble size E.

    Returns:
        A list of length ``members``.

    Raises:
        ValueError: If ``generators`` is given with a length other than ``members``.
    """
    if generators is None:
        return [None] * members
    if len(generators) != members:
        raise ValueError(f"need one generator per member: {members} members, {len(generators)} generators")
    return list(generators)


def _check_indices(indices: Sequence[int], members: int) -> list[int]:
    chosen = [int(i) for i in indices]
    if not chosen:
        raise ValueError("select at least one member")
    bad = [i for i in chosen if not 0 <= i < members]
    if bad:
        raise ValueError(f"member indices {bad} out of range for an ensemble of {members}")
    return chosen


class EnsembleLinear(nn.Module):
    """E independent affine maps applied member-wise: ``y[i] = x[i] · W[i] + b[i]``.

    With ``x`` of shape ``(E, B, in)``, ``W`` of shape ``(E, in, out)`` and ``b`` of shape
    ``(E, 1, out)`` the whole ensemble is one ``torch.baddbmm(b, x, W)``.

    Initialisation is that of :class:`torch.nn.Linear` (Kaiming-uniform with ``a = √5``, i.e.
    ``W ~ U(−1/√in, 1/√in)``, and ``b ~ U(−1/√in, 1/√in)``), drawn for member ``i`` from
    ``generators[i]`` in the order weight, bias. A 1-member layer built from a generator seeded
    with ``s`` therefore equals ``nn.Linear(in, out)`` built after ``torch.manual_seed(s)``
    (transposed weight).

    Attributes:
        members: Ensemble size E.
        in_features: Input width.
        out_features: Output width.
        weight: Parameter of shape ``(E, in_features, out_features)``.
        bias: Parameter of shape ``(E, 1, out_features)``.
    """

    def __init__(
        self,
        members: int,
        in_features: int,
        out_features: int,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        """Create and initialise the layer.

        Args:
            members: Ensemble size E ≥ 1.
            in_features: Input width ≥ 1.
            out_features: Output width ≥ 1.
            generators: One generator per member (its state advances), or ``None`` for the
                global RNG.

        Raises:
            ValueError: On a non-positive size or a generator count other than ``members``.
        """
        super().__init__()
        if min(members, in_features, out_features) < 1:
            raise ValueError(
                f"members, in_features and out_features must be ≥ 1, got {members}, {in_features}, {out_features}"
            )
        self.members = members
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features))
        self.reset_parameters(generators)

    def reset_parameters(self, generators: Sequence[torch.Generator] | None = None) -> None:
        """Re-draw every member's parameters as :class:`torch.nn.Linear` does.

        Args:
            generators: One generator per member, or ``None`` for the global RNG.
        """
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            for i, generator in enumerate(member_generators(generators, self.members)):
                device = generator.device if generator is not None else None
                weight = torch.empty(self.out_features, self.in_features, device=device)
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
                bias = torch.empty(self.out_features, device=device)
                nn.init.uniform_(bias, -bound, bound, generator=generator)
                self.weight[i].copy_(weight.T)
                self.bias[i, 0].copy_(bias)

    def forward(self, x: Tensor) -> Tensor:
        """Apply each member's affine map to its own slice of the input.

        Args:
            x: Input of shape ``(E, *batch, in_features)``.

        Returns:
            Output of shape ``(E, *batch, out_features)``.
        """
        flat = x.reshape(x.shape[0], -1, self.in_features)
        out = torch.baddbmm(self.bias, flat, self.weight)
        return out.reshape(*x.shape[:-1], self.out_features)

    def keep_members_(self, indices: Sequence[int]) -> None:
        """Keep only the given members, in the given order (in place).

        Args:
            indices: Member indices into the current ensemble; repeats are allowed.

        Raises:
            ValueError: If ``indices`` is empty or out of range.
        """
        index = torch.as_tensor(_check_indices(indices, self.members), device=self.weight.device)
        self.weight = nn.Parameter(self.weight.detach()[index].clone(), requires_grad=self.weight.requires_grad)
        self.bias = nn.Parameter(self.bias.detach()[index].clone(), requires_grad=self.bias.requires_grad)
        self.members = len(index)

    def extra_repr(self) -> str:
        """Summary shown by ``print(module)``."""
        return f"members={self.members}, in_features={self.in_features}, out_features={self.out_features}"


class EnsembleMLP(nn.Module):
    """An ensemble of E ReLU multi-layer perceptrons.

    For member ``i``: ``h₀ = x[i]``, ``h_k = ReLU(h_{k−1} W_k[i] + b_k[i])`` for each hidden
    width, and ``y[i] = h_K W_out[i] + b_out[i]`` (no output activation). Parameters are drawn
    layer by layer and, within a layer, member by member, each member from its own generator.

    Attributes:
        members: Ensemble size E.
        in_features: Input width.
        hidden: Hidden widths, input side first.
        out_features: Output width.
        hidden_layers: The hidden :class:`EnsembleLinear` layers.
        output_layer: The final :class:`EnsembleLinear` layer.
    """

    def __init__(
        self,
        members: int,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        """Create and initialise the network.

        Args:
            members: Ensemble size E ≥ 1.
            in_features: Input width.
            hidden: Hidden widths (the paper uses ``[512, 256, 128]``); empty for an affine map.
            out_features: Output width.
            generators: One generator per member, or ``None`` for the global RNG.

        Raises:
            ValueError: On a non-positive size or a generator count other than ``members``.
        """
        super().__init__()
        member_generators(generators, members)  # fail before drawing anything
        self.members = members
        self.in_features = in_features
        self.hidden = tuple(int(width) for width in hidden)
        self.out_features = out_features
        widths = (in_features, *self.hidden)
        self.hidden_layers = nn.ModuleList(
            EnsembleLinear(members, width_in, width_out, generators) for width_in, width_out in pairwise(widths)
        )
        self.output_layer = EnsembleLinear(members, widths[-1], out_features, generators)

    @property
    def hidden_features(self) -> int:
        """Width of the last hidden activation (``in_features`` without hidden layers)."""
        return self.hidden[-1] if self.hidden else self.in_features

    def forward_with_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Evaluate the ensemble and also return its last hidden activation.

        Args:
            x: Input of shape ``(E, *batch, in_features)``.

        Returns:
            ``(output, hidden)`` of shapes ``(E, *batch, out_features)`` and
            ``(E, *batch, hidden_features)``; ``hidden`` is ``h_K`` after its ReLU (the input
            itself when there are no hidden layers).
        """
        hidden = x
        for layer in self.hidden_layers:
            hidden = torch.relu(layer(hidden))
        output: Tensor = self.output_layer(hidden)
        return output, hidden

    def forward(self, x: Tensor) -> Tensor:
        """Evaluate the ensemble.

        Args:
            x: Input of shape ``(E, *batch, in_features)``.

        Returns:
            Output of shape ``(E, *batch, out_features)``.
        """
        return self.forward_with_hidden(x)[0]

    def keep_members_(self, indices: Sequence[int]) -> None:
        """Keep only the given members, in the given order (in place), e.g. to export one seed.

        Args:
            indices: Member indices into the current ensemble; repeats are allowed.

        Raises:
            ValueError: If ``indices`` is empty or out of range.
        """
        chosen = _check_indices(indices, self.members)
        for layer in (*self.hidden_layers, self.output_layer):
            assert isinstance(layer, EnsembleLinear)
            layer.keep_members_(chosen)
        self.members = len(chosen)
