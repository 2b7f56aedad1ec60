"""Actors and critics for offline RL (IQL, CQL), as ensembles of E independent members.

Every network takes raw observations ``(E, *batch, D)`` (member dimension first; expand a shared
batch with ``obs.expand(E, *obs.shape)``), encodes them with a shared :class:`ObservationEncoder`
(features + normaliser, so the preprocessing is part of the exported model) and evaluates an
:class:`~models.layers.EnsembleMLP` trunk. Networks are deterministic functions of their inputs:
sampling noise is an argument, the caller owns every random number.

Continuous actions use a tanh-squashed Gaussian rescaled to the action box ``[low, high]``;
discrete actions a categorical policy sampled by Gumbel-max, or the greedy policy of a discrete
critic (:class:`GreedyQPolicy`, CQL-DQN's policy). Critics are twin ensembles: one
trunk of 2E members, head ``h`` of member ``i`` at trunk index ``h·E + i``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Literal, Self, get_args

import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)
from torch import Tensor, nn

from models.features import ObservationEncoder
from models.layers import EnsembleLinear, EnsembleMLP, member_generators

#: Hidden widths of every network in the paper.
PAPER_HIDDEN: tuple[int, ...] = (512, 256, 128)
#: Dataset actions are clamped this far (as a fraction of the half range) inside the action box
#: before ``atanh``, so that actions on the bounds have a finite log-probability.
ACTION_EPSILON = 1e-6
#: How :meth:`GaussianTanhActor.log_prob` scores given actions (see its docstring).
ActionLikelihood = Literal["tanh-mean", "squashed"]
_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _twin_generators(generators: Sequence[torch.Generator] | None, members: int) -> list[torch.Generator] | None:
    """Generators for a 2E-member twin trunk: member ``i``'s generator draws both of its heads."""
    if generators is None:
        return None
    member_generators(generators, members)  # checks the count
    return [*generators, *generators]


class EnsembleNetwork(nn.Module):
    """Base of the ensemble networks: an encoder, E members and member selection.

    Attributes:
        members: Ensemble size E.
        encoder: The shared observation encoder (raw observation → normalised features).
    """

    def __init__(self, members: int, encoder: ObservationEncoder) -> None:
        """Store the ensemble size and the encoder.

        Args:
            members: Ensemble size E ≥ 1.
            encoder: Observation encoder; the same object may be shared by several networks.

        Raises:
            ValueError: If ``members`` < 1.
        """
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be ≥ 1, got {members}")
        self.members = members
        self.encoder = encoder

    def encode(self, observation: Tensor) -> Tensor:
        """Normalised features of raw observations ``(E, *batch, D)`` → ``(E, *batch, F)``."""
        features: Tensor = self.encoder(observation)
        return features

    def select_members(self, indices: Sequence[int]) -> Self:
        """A copy holding only the given members, in the given order (e.g. one seed for export).

        The copy has its own copy of the encoder.

        Args:
            indices: Member indices, each in ``[0, E)``.

        Returns:
            A network of ``len(indices)`` members whose member ``k`` equals member
            ``indices[k]`` of this one.

        Raises:
            ValueError: If ``indices`` is empty or out of range.
        """
        chosen = [int(i) for i in indices]
        if not chosen or not all(0 <= i < self.members for i in chosen):
            raise ValueError(f"member indices {chosen} must be non-empty and within [0, {self.members})")
        selected = copy.deepcopy(self)
        for module in selected.modules():
            if isinstance(module, EnsembleMLP):
                heads = module.members // self.members
                module.keep_members_([head * self.members + i for head in range(heads) for i in chosen])
        selected.members = len(chosen)
        return selected


class GaussianTanhActor(EnsembleNetwork):
    r"""Tanh-squashed Gaussian policy on the action box ``[low, high]``.

    The trunk outputs a mean :math:`μ` and an unbounded :math:`ρ` per action dimension; the
    log-std is squashed into its bounds, :math:`\log σ = l + (h - l)(\tanh ρ + 1)/2`. With
    noise :math:`ε`, the pre-squash sample :math:`u = μ + σ ε` becomes the action

    .. math::

        a = \mathrm{low} + \frac{\tanh u + 1}{2} (\mathrm{high} - \mathrm{low}),

    whose log-density follows from the change of variables (summed over action dimensions):

    .. math::

        \log π(a|o) = \log \mathcal N(u; μ, σ) - \log\frac{\mathrm{high} - \mathrm{low}}{2}
            - 2(\log 2 - u - \mathrm{softplus}(-2u)),

    using the stable identity :math:`\log(1 - \tanh^2 u) = 2(\log 2 - u - \mathrm{softplus}(-2u))`.
    :meth:`act` and :meth:`act_many` sample this density (CQL's actor and entropy).

    :meth:`log_prob` scores *given* actions (IQL's advantage-weighted regression, behaviour
    cloning). With ``likelihood="tanh-mean"`` (the default) it is the Gaussian of the normalised
    action :math:`y = 2(a - \mathrm{low})/(\mathrm{high} - \mathrm{low}) - 1` around the squashed
    mean, as in the IQL authors' learner (``tanh_squash_distribution=False``) and d3rlpy's IQL:

    .. math::

        \log π(a|o) = \log \mathcal N(y; \tanh μ, σ) - \log\frac{\mathrm{high} - \mathrm{low}}{2}.

    Every action of the box, its bounds included, has a finite log-probability without a clamp,
    and the weighted maximum-likelihood mean is the weighted mean of the data's ``y``, inside the
    box, so :meth:`deterministic` can reach it. ``likelihood="squashed"`` scores with the squashed
    density above instead, at :math:`u = \operatorname{atanh} y`: a bang-bang action on a bound
    becomes :math:`u = ±\operatorname{atanh}(1 - ε)` (±7.25 for ε = 1e-6), an outlier that the
    Gaussian term fits first by inflating σ towards its upper bound, where the tanh-bounded log-std
    saturates and the mean's gradient :math:`(u - μ)/σ^2` is small: on bang-bang expert data the
    deterministic action then learns slowly or not at all (``bench/bench_correctness.py``).

    Attributes:
        action_low: Buffer ``(A,)``, lower action bound (saved with the weights).
        action_high: Buffer ``(A,)``, upper action bound.
        log_std_bounds: ``(l, h)`` bounds of the log-std.
        action_epsilon: Clamp margin of :meth:`log_prob` with ``likelihood="squashed"`` (fraction of
            the half range).
        likelihood: How :meth:`log_prob` scores given actions: ``tanh-mean`` or ``squashed``.
        trunk: Ensemble MLP, features → ``2A`` (mean, unbounded log-std).
    """

    action_low: Tensor
    action_high: Tensor

    def __init__(
        self,
        members: int,
        encoder: ObservationEncoder,
        action_low: Tensor,
        action_high: Tensor,
        hidden: Sequence[int] = PAPER_HIDDEN,
        generators: Sequence[torch.Generator] | None = None,
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
        *,
        action_epsilon: float = ACTION_EPSILON,
        likelihood: ActionLikelihood = "tanh-mean",
    ) -> None:
        """Build the actor.

        Args:
            members: Ensemble size E.
            encoder: Shared observation encoder.
            action_low: Lower action bounds, shape ``(A,)``.
            action_high: Upper action bounds, shape ``(A,)``, each above its lower bound.
            hidden: Hidden widths of the trunk.
            generators: One generator per member, or ``None`` for the global RNG.
            log_std_bounds: ``(min, max)`` of the log-std.
            action_epsilon: Clamp margin of :meth:`log_prob` (``squashed``), in ``(0, 1)``.
            likelihood: How :meth:`log_prob` scores given actions (see the class docstring).

        Raises:
            ValueError: On inconsistent bounds.
        """
        super().__init__(members, encoder)
        low = torch.as_tensor(action_low, dtype=torch.get_default_dtype()).detach().clone().reshape(-1)
        high = torch.as_tensor(action_high, dtype=torch.get_default_dtype()).detach().clone().reshape(-1)
        if low.shape != high.shape or low.numel() == 0:
            raise ValueError(f"action bounds must have the same non-empty shape, got {low.shape} and {high.shape}")
        if not bool(torch.isfinite(low).all() and torch.isfinite(high).all() and (high > low).all()):
            raise ValueError(f"action bounds must be finite with high > low, got low={low}, high={high}")
        if not log_std_bounds[0] < log_std_bounds[1]:
            raise ValueError(f"log_std_bounds must be (min, max) with min < max, got {log_std_bounds}")
        if not 0 < action_epsilon < 1:
            raise ValueError(f"action_epsilon must be in (0, 1), got {action_epsilon}")
        if likelihood not in get_args(ActionLikelihood):
            raise ValueError(f"likelihood must be one of {get_args(ActionLikelihood)}, got {likelihood!r}")
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)
        self.action_dim = low.numel()
        self.log_std_bounds = (float(log_std_bounds[0]), float(log_std_bounds[1]))
        self.action_epsilon = action_epsilon
        self.likelihood: ActionLikelihood = likelihood
        self.trunk = EnsembleMLP(members, encoder.out_features, hidden, 2 * self.action_dim, generators)

    def forward(self, observation: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gaussian parameters before squashing, and the trunk's last hidden activation.

        Args:
            observation: Raw observations ``(E, *batch, D)``.

        Returns:
            ``(mean, log_std, hidden)`` of shapes ``(E, *batch, A)``, ``(E, *batch, A)`` and
            ``(E, *batch, H)``; ``log_std`` lies within ``log_std_bounds``.
        """
        output, hidden = self.trunk.forward_with_hidden(self.encode(observation))
        mean = output[..., : self.action_dim]
        low, high = self.log_std_bounds
        log_std = low + 0.5 * (high - low) * (torch.tanh(output[..., self.action_dim :]) + 1.0)
        return mean, log_std, hidden

    def _squash(self, u: Tensor) -> Tensor:
        return self.action_low + 0.5 * (torch.tanh(u) + 1.0) * (self.action_high - self.action_low)

    def _log_prob(self, u: Tensor | None, standardized: Tensor, log_std: Tensor) -> Tensor:
        """Log-density of an action given ``ε = (x − centre)/σ`` of its Gaussian variable x, summed over A.

        ``u``: the pre-squash sample, for the squashed density (x = u, centre μ); ``None`` for the
        Gaussian of the normalised action itself (x = y, centre tanh μ: ``likelihood="tanh-mean"``).
        Both include the box's scale ``log((high − low)/2)``.
        """
        gaussian = -0.5 * standardized.square() - log_std - _HALF_LOG_2PI
        log_abs_det = torch.log(0.5 * (self.action_high - self.action_low))
        if u is not None:
            log_abs_det = log_abs_det + 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))
        return (gaussian - log_abs_det).sum(dim=-1)

    def act(self, observation: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Sample (or pick the mode of the pre-squash Gaussian) and return its log-probability.

        Args:
            observation: Raw observations ``(E, *batch, D)``.
            noise: Standard normal noise ``(E, *batch, A)``; ``None`` for the deterministic
                action ``low + (tanh μ + 1)/2 · (high − low)``.

        Returns:
            ``(action, log_prob)`` of shapes ``(E, *batch, A)`` and ``(E, *batch)``; the action lies
            in ``[low, high]``.
        """
        mean, log_std, _ = self.forward(observation)
        if noise is None:
            u, standardized = mean, torch.zeros_like(mean)
        else:
            u, standardized = mean + log_std.exp() * noise, noise
        return self._squash(u), self._log_prob(u, standardized, log_std)

    def act_many(self, observation: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """K samples per state with the trunk evaluated once per state (CQL's sampled actions).

        Equal to :meth:`act` on each state repeated K times with the same noise, up to float rounding.

        Args:
            observation: Raw observations ``(E, *batch, D)``.
            noise: Standard normal noise ``(E, *batch, K, A)``.

        Returns:
            ``(action, log_prob)`` of shapes ``(E, *batch, K, A)`` and ``(E, *batch, K)``.
        """
        mean, log_std, _ = self.forward(observation)
        mean, log_std = mean.unsqueeze(-2), log_std.unsqueeze(-2)
        u = mean + log_std.exp() * noise
        return self._squash(u), self._log_prob(u, noise, log_std.expand_as(u))

    def log_prob(self, observation: Tensor, action: Tensor) -> Tensor:
        """Log-probability of given (dataset) actions, e.g. for the AWR actor loss of IQL.

        The action is mapped to ``y = 2(a − low)/(high − low) − 1``. ``tanh-mean``: the Gaussian
        log-density of ``y`` around ``tanh μ``, finite on the whole box. ``squashed``: ``y`` is
        clamped to ``[−1 + ε, 1 − ε]`` so that actions on the bounds stay finite, un-squashed with
        ``u = atanh y`` and scored by the squashed density. Both include the box's scale
        ``−log((high − low)/2)`` per dimension (see the class docstring).

        Args:
            observation: Raw observations ``(E, *batch, D)``.
            action: Actions ``(E, *batch, A)`` in ``[low, high]``.

        Returns:
            ``log π(action | observation)`` of shape ``(E, *batch)``.
        """
        mean, log_std, _ = self.forward(observation)
        y = 2.0 * (action - self.action_low) / (self.action_high - self.action_low) - 1.0
        if self.likelihood == "tanh-mean":
            return self._log_prob(None, (y - torch.tanh(mean)) * torch.exp(-log_std), log_std)
        u = torch.atanh(y.clamp(-1.0 + self.action_epsilon, 1.0 - self.action_epsilon))
        return self._log_prob(u, (u - mean) * torch.exp(-log_std), log_std)

    def deterministic(self, observation: Tensor) -> Tensor:
        """The deterministic action ``low + (tanh μ + 1)/2 · (high − low)``, shape ``(E, *batch, A)``."""
        return self._squash(self.forward(observation)[0])


class CategoricalActor(EnsembleNetwork):
    r"""Categorical policy over ``n`` discrete actions, :math:`π(\cdot|o) = \mathrm{softmax}(\mathrm{logits})`.

    Sampling uses the Gumbel-max trick with caller-provided uniforms :math:`U`:
    :math:`\arg\max_k (\mathrm{logits}_k - \log(-\log U_k))` is distributed as :math:`π`.

    Attributes:
        n_actions: Number of discrete actions.
        trunk: Ensemble MLP, features → ``n`` logits.
    """

    def __init__(
        self,
        members: int,
        encoder: ObservationEncoder,
        n_actions: int,
        hidden: Sequence[int] = PAPER_HIDDEN,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        """Build the actor.

        Args:
            members: Ensemble size E.
            encoder: Shared observation encoder.
            n_actions: Number of discrete actions ≥ 2.
            hidden: Hidden widths of the trunk.
            generators: One generator per member, or ``None`` for the global RNG.

        Raises:
            ValueError: If ``n_actions`` < 2.
        """
        super().__init__(members, encoder)
        if n_actions < 2:
            raise ValueError(f"n_actions must be ≥ 2, got {n_actions}")
        self.n_actions = n_actions
        self.trunk = EnsembleMLP(members, encoder.out_features, hidden, n_actions, generators)

    def forward(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the trunk's last hidden activation.

        Args:
            observation: Raw observations ``(E, *batch, D)``.

        Returns:
            ``(logits, hidden)`` of shapes ``(E, *batch, n)`` and ``(E, *batch, H)``.
        """
        return self.trunk.forward_with_hidden(self.encode(observation))

    def log_prob(self, observation: Tensor, index: Tensor) -> Tensor:
        """Log-probability of given action indices.

        Args:
            observation: Raw observations ``(E, *batch, D)``.
            index: Action indices ``(E, *batch)``, integer (long).

        Returns:
            ``log π(index | observation)`` of shape ``(E, *batch)``.
        """
        logits, _ = self.forward(observation)
        return torch.log_softmax(logits, dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)

    def act(self, observation: Tensor, uniform: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Sample by Gumbel-max with the given uniforms, or take the argmax.

        Args:
            observation: Raw observations ``(E, *batch, D)``.
            uniform: Uniform ``[0, 1)`` noise ``(E, *batch, n)`` (clamped away from 0 and 1);
                ``None`` for the most probable action.

        Returns:
            ``(index, log_prob)``, both of shape ``(E, *batch)``; ``index`` is long.
        """
        logits, _ = self.forward(observation)
        if uniform is None:
            index = logits.argmax(dim=-1)
        else:
            info = torch.finfo(logits.dtype)
            u = uniform.to(logits.dtype).clamp(info.tiny, 1.0 - info.eps)
            index = (logits - torch.log(-torch.log(u))).argmax(dim=-1)
        log_prob = torch.log_softmax(logits, dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
        return index, log_prob

    def deterministic(self, observation: Tensor) -> Tensor:
        """The most probable action index, shape ``(E, *batch)``, long."""
        logits, _ = self.forward(observation)
        return logits.argmax(dim=-1)


class TwinQ(EnsembleNetwork):
    """Twin continuous critics :math:`Q_1, Q_2` for each member: ``(obs, action) → (2, E, *batch)``.

    Both heads of member ``i`` are drawn from ``generators[i]`` (head 1 layer, head 2 layer,
    alternately); they are independent networks sharing nothing but the encoder.

    Attributes:
        action_dim: Action width A.
        trunk: Ensemble MLP of 2E members, ``[features, action]`` → 1.
    """

    def __init__(
        self,
        members: int,
        encoder: ObservationEncoder,
        action_dim: int,
        hidden: Sequence[int] = PAPER_HIDDEN,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        """Build the critic.

        Args:
            members: Ensemble size E.
            encoder: Shared observation encoder.
            action_dim: Action width A ≥ 1.
            hidden: Hidden widths of the trunk.
            generators: One generator per member, or ``None`` for the global RNG.

        Raises:
            ValueError: If ``action_dim`` < 1 or the generator count is not ``members``.
        """
        super().__init__(members, encoder)
        if action_dim < 1:
            raise ValueError(f"action_dim must be ≥ 1, got {action_dim}")
        self.action_dim = action_dim
        self.trunk = EnsembleMLP(
            2 * members, encoder.out_features + action_dim, hidden, 1, _twin_generators(generators, members)
        )

    def forward_with_hidden(self, observation: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Q-values and the last hidden activation of both heads.

        Args:
            observation: Raw observations ``(E, *batch, D)``.
            action: Actions ``(E, *batch, A)``.

        Returns:
            ``(q, hidden)`` of shapes ``(2, E, *batch)`` and ``(2, E, *batch, H)``.
        """
        x = torch.cat([self.encode(observation), action], dim=-1)
        q, hidden = self.trunk.forward_with_hidden(torch.cat([x, x], dim=0))
        return q.reshape(2, self.members, *q.shape[1:-1]), hidden.reshape(2, self.members, *hidden.shape[1:])

    def forward(self, observation: Tensor, action: Tensor) -> Tensor:
        """Q-values of both heads.

        Args:
            observation: Raw observations ``(E, *batch, D)``.
            action: Actions ``(E, *batch, A)``.

        Returns:
            ``q`` of shape ``(2, E, *batch)``.
        """
        return self.forward_with_hidden(observation, action)[0]

    def forward_actions(self, observation: Tensor, actions: Tensor) -> Tensor:
        r"""Q-values of K actions per state, the state's share of the first layer computed once per state.

        The first layer of ``[features, action]`` splits as :math:`x_s W_s + b + a W_a`: the state
        part is evaluated on the B states and broadcast over their K actions, instead of on B·K
        repeated states (CQL's sampled actions). Equal to ``forward`` on each state repeated K times,
        up to float rounding.

        Args:
            observation: Raw observations ``(E, B, D)``.
            actions: Actions ``(E, B, K, A)``.

        Returns:
            ``q`` of shape ``(2, E, B, K)``.
        """
        features = self.encode(observation)
        first = self.trunk.hidden_layers[0] if self.trunk.hidden_layers else self.trunk.output_layer
        assert isinstance(first, EnsembleLinear)
        width = features.shape[-1]
        both, acts = torch.cat([features, features], dim=0), torch.cat([actions, actions], dim=0)
        state = torch.baddbmm(first.bias, both, first.weight[:, :width])  # (2E, B, H)
        action = torch.bmm(acts.reshape(acts.shape[0], -1, acts.shape[-1]), first.weight[:, width:])
        x = state.unsqueeze(2) + action.reshape(*acts.shape[:-1], -1)  # (2E, B, K, H)
        if self.trunk.hidden_layers:
            x = torch.relu(x)
            for layer in self.trunk.hidden_layers[1:]:
                x = torch.relu(layer(x))
            x = self.trunk.output_layer(x)
        return x.reshape(2, self.members, *x.shape[1:-1])


class DiscreteTwinQ(EnsembleNetwork):
    """Twin discrete critics: ``obs → (2, E, *batch, n)``, one Q-value per action.

    Attributes:
        n_actions: Number of discrete actions.
        trunk: Ensemble MLP of 2E members, features → ``n``.
    """

    def __init__(
        self,
        members: int,
        encoder: ObservationEncoder,
        n_actions: int,
        hidden: Sequence[int] = PAPER_HIDDEN,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        """Build the critic.

        Args:
            members: Ensemble size E.
            encoder: Shared observation encoder.
            n_actions: Number of discrete actions ≥ 2.
            hidden: Hidden widths of the trunk.
            generators: One generator per member, or ``None`` for the global RNG.

        Raises:
            ValueError: If ``n_actions`` < 2 or the generator count is not ``members``.
        """
        super().__init__(members, encoder)
        if n_actions < 2:
            raise ValueError(f"n_actions must be ≥ 2, got {n_actions}")
        self.n_actions = n_actions
        self.trunk = EnsembleMLP(
            2 * members, encoder.out_features, hidden, n_actions, _twin_generators(generators, members)
        )

    def forward_with_hidden(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        """Q-values of every action and the last hidden activation of both heads.

        Args:
            observation: Raw observations ``(E, *batch, D)``.

        Returns:
            ``(q, hidden)`` of shapes ``(2, E, *batch, n)`` and ``(2, E, *batch, H)``.
        """
        x = self.encode(observation)
        q, hidden = self.trunk.forward_with_hidden(torch.cat([x, x], dim=0))
        return q.reshape(2, self.members, *q.shape[1:]), hidden.reshape(2, self.members, *hidden.shape[1:])

    def forward(self, observation: Tensor) -> Tensor:
        """Q-values of every action, shape ``(2, E, *batch, n)``."""
        return self.forward_with_hidden(observation)[0]


class GreedyQPolicy(EnsembleNetwork):
    r"""The greedy policy of a discrete critic, :math:`π(o) = \arg\max_a \bar Q(o, a)`, with no weights of its own.

    :math:`\bar Q` is the mean of the twin heads. Read as a categorical policy its logits are
    :math:`\bar Q(o, \cdot)`, so :math:`\mathrm{softmax}(\bar Q)` is what output-consistency losses compare; its
    hidden activation is both heads' last hidden layers side by side. It wraps the critic itself (no copy), so
    training the critic trains the policy, and exporting it exports the argmax of Q.

    Attributes:
        critic: The wrapped critic.
        n_actions: Number of discrete actions.
    """

    def __init__(self, critic: DiscreteTwinQ) -> None:
        """Wrap ``critic``.

        Args:
            critic: The discrete twin critic whose argmax is the policy.
        """
        super().__init__(critic.members, critic.encoder)
        self.critic = critic
        self.n_actions = critic.n_actions

    def forward(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (the mean of the twin Q-values) and both heads' last hidden activations.

        Args:
            observation: Raw observations ``(E, *batch, D)``.

        Returns:
            ``(logits, hidden)`` of shapes ``(E, *batch, n)`` and ``(E, *batch, 2H)``.
        """
        q, hidden = self.critic.forward_with_hidden(observation)
        return q.mean(dim=0), torch.cat([hidden[0], hidden[1]], dim=-1)

    def deterministic(self, observation: Tensor) -> Tensor:
        """The greedy action index, shape ``(E, *batch)``, long."""
        logits, _ = self.forward(observation)
        return logits.argmax(dim=-1)

    def select_members(self, indices: Sequence[int]) -> Self:
        """The greedy policy of a copy of the critic holding only the given members (see the base class)."""
        return type(self)(self.critic.select_members(indices))


class ValueNet(EnsembleNetwork):
    """State-value ensemble :math:`V(o)`: ``obs → (E, *batch)``.

    Attributes:
        trunk: Ensemble MLP, features → 1.
    """

    def __init__(
        self,
        members: int,
        encoder: ObservationEncoder,
        hidden: Sequence[int] = PAPER_HIDDEN,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        """Build the value network.

        Args:
            members: Ensemble size E.
            encoder: Shared observation encoder.
            hidden: Hidden widths of the trunk.
            generators: One generator per member, or ``None`` for the global RNG.
        """
        super().__init__(members, encoder)
        self.trunk = EnsembleMLP(members, encoder.out_features, hidden, 1, generators)

    def forward_with_hidden(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        """Values and the last hidden activation, shapes ``(E, *batch)`` and ``(E, *batch, H)``."""
        value, hidden = self.trunk.forward_with_hidden(self.encode(observation))
        return value.squeeze(-1), hidden

    def forward(self, observation: Tensor) -> Tensor:
        """Values of shape ``(E, *batch)``."""
        return self.forward_with_hidden(observation)[0]
