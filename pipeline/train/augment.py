"""Imposing the symmetry during training: the paper's data-augmentation variants and canonicalisation.

With g drawn per sample from the training subgroup (the C4 rotations for the reacher), o the
observation, a the dataset action and w(o, a) the per-sample weight of the actor objective
(the clipped AWR weight for IQL, 1 for BC):

- ``none``:          L = -E[w(o,a) log π(a|o)]
- ``aug-d``:         L = -½ E[w(o,a) log π(a|o) + w(g·o,g·a) log π(g·a|g·o)]
- ``aug-d-online``:  L = -½ E[w(o,a) (log π(a|o) + log π(g·a|g·o))]   (weights from o only)
- ``dac-latent``:    L = L_none + λ E‖h(g·o) - sg h(o)‖²               (h: last hidden layer)
- ``dac-output``:    L = L_none + λ E D(sg π(·|o), π(·|g·o))           (outputs mapped by g)
- ``canonical``:     inputs are rotated into the frame where the goal bearing is 0, so the
                     network is symmetric by construction and no loss term is needed.

D is the KL divergence for categorical policies (with actions re-indexed by g) and the squared
distance of mean and log-std for Gaussian policies (with the mean mapped by g); sg is a
stop-gradient on the original branch (as in DrAC). For critics the same variants act on the
Bellman losses: ``aug-d`` trains on [o, g·o], ``aug-d-online`` uses the targets of o for both,
``dac-output`` adds λ E(Q(g·o, g·a) - sg Q(o, a))². Discrete CQL has no actor (its policy is argmax Q):
:mod:`pipeline.train.cql` says how each variant applies to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from models.networks import DiscreteTwinQ, GaussianTanhActor, ValueNet
from models.symmetry import BoundSymmetry, GroupElement
from pipeline.train.buffer import Batch
from pipeline.train.common import Critic, Policy
from pipeline.train.config import AugmentationConfig


def stack_elements(elements: Sequence[GroupElement]) -> GroupElement:
    """Stack per-member group elements ``(B,)`` into one ``(E, B)`` element."""
    return GroupElement(
        angle=torch.stack([e.angle for e in elements]), mirror=torch.stack([e.mirror for e in elements])
    )


@dataclass
class Augmenter:
    """Draws group elements per member and applies them to batches; knows which networks are augmented."""

    config: AugmentationConfig
    symmetry: BoundSymmetry
    discrete: bool

    @property
    def actor(self) -> bool:
        """Whether the actor objective is augmented."""
        return self.config.strategy != "none" and self.config.applied_to in ("actor", "both")

    @property
    def critic(self) -> bool:
        """Whether the critic objectives are augmented."""
        return self.config.strategy != "none" and self.config.applied_to in ("critic", "both")

    @property
    def canonical(self) -> bool:
        """Whether inputs are canonicalised instead of augmented."""
        return self.config.strategy == "canonical"

    def sample(self, generators: Sequence[torch.Generator], batch_size: int, device: torch.device) -> GroupElement:
        """One training-subgroup element per sample, each member from its own generator."""
        element = stack_elements([self.symmetry.sample((batch_size,), g) for g in generators])
        return GroupElement(angle=element.angle.to(device), mirror=element.mirror.to(device))

    def act_actions(self, actions: Tensor, g: GroupElement) -> Tensor:
        """g·a for continuous actions or discrete action indices."""
        if self.discrete:
            return self.symmetry.act_discrete_action(actions, g)
        return self.symmetry.act_action(actions, g)

    def transform(self, batch: Batch, g: GroupElement) -> Batch:
        """The batch seen from the transformed context: (g·o, g·a, r, g·o′, d)."""
        return Batch(
            observations=self.symmetry.act_observation(batch.observations, g),
            actions=self.act_actions(batch.actions, g),
            rewards=batch.rewards,
            next_observations=self.symmetry.act_observation(batch.next_observations, g),
            terminals=batch.terminals,
        )

    def canonical_element(self, observations: Tensor, frame_field: str = "goal_position") -> GroupElement:
        """The rotation g(-φ) that brings ``frame_field`` to bearing 0 (φ = atan2(y, x))."""
        names = self.symmetry.observation_names
        x = observations[..., names.index(f"{frame_field}.x")]
        y = observations[..., names.index(f"{frame_field}.y")]
        # atan2 in float32 (ONNX Runtime has no float64 Atan), then one Newton step in the input's precision:
        # δ = tan(φ - φ₀) = (y cos φ₀ - x sin φ₀) / (x cos φ₀ + y sin φ₀), exact to O(δ³).
        bearing = torch.atan2(y.float(), x.float()).to(x.dtype)
        cos, sin = torch.cos(bearing), torch.sin(bearing)
        bearing = bearing + (y * cos - x * sin) / (x * cos + y * sin)
        return GroupElement(angle=-bearing, mirror=torch.zeros_like(x, dtype=torch.bool))

    def canonicalize(self, batch: Batch) -> Batch:
        """Every transition in its canonical frame (observation, next observation and action alike)."""
        return self.transform(batch, self.canonical_element(batch.observations))


def concat(a: Batch, b: Batch) -> Batch:
    """Two batches side by side along the batch dimension."""
    return Batch(*(torch.cat([x, y], dim=1) for x, y in zip(vars(a).values(), vars(b).values(), strict=True)))


def gaussian_consistency(mean: Tensor, log_std: Tensor, mean_g: Tensor, log_std_g: Tensor, map_mean: Tensor) -> Tensor:
    """D for Gaussian policies, per member: E‖μ(g·o) - g·sg μ(o)‖² + E‖log σ(g·o) - sg log σ(o)‖².

    Args:
        mean: μ(o), ``(E, B, A)``.
        log_std: log σ(o).
        mean_g: μ(g·o).
        log_std_g: log σ(g·o).
        map_mean: g·sg μ(o) (the caller maps the detached mean with the group action).

    Returns:
        ``(E,)``.
    """
    del mean  # the mapped, detached copy is what is compared
    return ((mean_g - map_mean) ** 2).mean(dim=(1, 2)) + ((log_std_g - log_std.detach()) ** 2).mean(dim=(1, 2))


def categorical_consistency(logits: Tensor, logits_g_reindexed: Tensor) -> Tensor:
    """D for categorical policies, per member: E KL(sg π(·|o) ‖ π(g·(·)|g·o)).

    Args:
        logits: Logits at o, ``(E, B, n)``.
        logits_g_reindexed: Logits at g·o re-indexed so that entry a holds the logit of g·a.

    Returns:
        ``(E,)``.
    """
    log_p = torch.log_softmax(logits.detach(), dim=-1)
    log_q = torch.log_softmax(logits_g_reindexed, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean(dim=1)


def latent_consistency(hidden: Tensor, hidden_g: Tensor) -> Tensor:
    """DAC-Latent, per member: E‖h(g·o) - sg h(o)‖² (mean over units)."""
    return ((hidden_g - hidden.detach()) ** 2).mean(dim=(1, 2))


def actor_consistency(actor: Policy, augmenter: Augmenter, observations: Tensor, g: GroupElement) -> Tensor:
    """The DAC consistency term of the actor, per member ``(E,)`` (DAC-Output or DAC-Latent)."""
    transformed = augmenter.symmetry.act_observation(observations, g)
    latent = augmenter.config.strategy == "dac-latent"
    if isinstance(actor, GaussianTanhActor):
        mean, log_std, hidden = actor(observations)
        mean_g, log_std_g, hidden_g = actor(transformed)
        if latent:
            return latent_consistency(hidden, hidden_g)
        return gaussian_consistency(mean, log_std, mean_g, log_std_g, augmenter.act_actions(mean.detach(), g))
    logits, hidden = actor(observations)
    logits_g, hidden_g = actor(transformed)
    if latent:
        return latent_consistency(hidden, hidden_g)
    # Entry a of the re-indexed logits holds the logit of g·a at g·o.
    every_action = torch.arange(logits.shape[-1], device=logits.device).expand(*logits.shape)
    per_action = GroupElement(
        angle=g.angle[..., None].expand(*logits.shape), mirror=g.mirror[..., None].expand(*logits.shape)
    )
    return categorical_consistency(logits, logits_g.gather(-1, augmenter.act_actions(every_action, per_action)))


def critic_consistency(
    critic: Critic, value: ValueNet | None, batch: Batch, transformed: Batch, latent: bool
) -> Tensor:
    """The DAC consistency term of the critics, per member ``(E,)``, summed over the twin heads.

    ``dac-output``: E(Q(g·o, g·a) - sg Q(o, a))² (+ E(V(g·o) - sg V(o))² when there is a V);
    ``dac-latent``: the same on the last hidden layer of each network.
    """

    def q_and_hidden(b: Batch) -> tuple[Tensor, Tensor]:
        if isinstance(critic, DiscreteTwinQ):
            q_all, hidden = critic.forward_with_hidden(b.observations)
            return q_all.gather(-1, b.actions[None, ..., None].expand(2, *b.actions.shape, 1)).squeeze(-1), hidden
        q, hidden = critic.forward_with_hidden(b.observations, b.actions)
        return q, hidden

    (q, q_hidden), (q_g, q_hidden_g) = q_and_hidden(batch), q_and_hidden(transformed)
    if latent:
        total = ((q_hidden_g - q_hidden.detach()) ** 2).mean(dim=(2, 3)).sum(dim=0)
    else:
        total = ((q_g - q.detach()) ** 2).mean(dim=2).sum(dim=0)
    if value is not None:
        (v, v_hidden), (v_g, v_hidden_g) = (
            value.forward_with_hidden(batch.observations),
            value.forward_with_hidden(transformed.observations),
        )
        total = total + (latent_consistency(v_hidden, v_hidden_g) if latent else ((v_g - v.detach()) ** 2).mean(dim=1))
    return total


@dataclass
class Views:
    """What each loss of one update sees, once the symmetry strategy is applied to a minibatch.

    Attributes:
        original: The critics' transitions before augmentation (canonicalised if the critics are canonical).
        critic: What the Bellman losses train on: ``[o, g·o]`` for ``aug-d``/``aug-d-online``, else ``original``.
        actor: The actor's transitions (canonicalised if the actor is canonical).
        critic_strategy: The strategy acting on the critic losses (``none`` when they are not augmented).
        actor_strategy: The strategy acting on the actor loss.
    """

    original: Batch
    critic: Batch
    actor: Batch
    critic_strategy: str
    actor_strategy: str


def views(augmenter: Augmenter | None, batch: Batch, g: GroupElement | None) -> Views:
    """Split one minibatch into the views of the critic and actor losses."""
    if augmenter is None or g is None:
        return Views(batch, batch, batch, "none", "none")
    critic_batch = actor_batch = batch
    if augmenter.canonical:
        canonical = augmenter.canonicalize(batch)
        critic_batch = canonical if augmenter.critic else batch
        actor_batch = canonical if augmenter.actor else batch
    strategy = augmenter.config.strategy
    critic_strategy = strategy if augmenter.critic and not augmenter.canonical else "none"
    actor_strategy = strategy if augmenter.actor and not augmenter.canonical else "none"
    augmented = critic_batch
    if critic_strategy in ("aug-d", "aug-d-online"):
        augmented = concat(critic_batch, augmenter.transform(critic_batch, g))
    return Views(critic_batch, augmented, actor_batch, critic_strategy, actor_strategy)


def with_critic_consistency(
    critic_loss: Tensor,
    critic: Critic,
    value: ValueNet | None,
    augmenter: Augmenter | None,
    strategy: str,
    batch: Batch,
    g: GroupElement | None,
    metrics: dict[str, Tensor],
) -> Tensor:
    """``critic_loss + λ·D`` (:func:`critic_consistency`) for ``dac-output``/``dac-latent``, else ``critic_loss``."""
    if strategy not in ("dac-output", "dac-latent"):
        return critic_loss
    assert augmenter is not None and g is not None
    consistency = critic_consistency(critic, value, batch, augmenter.transform(batch, g), strategy == "dac-latent")
    metrics["critic_consistency"] = consistency.detach()
    return critic_loss + augmenter.config.consistency_weight * consistency


def with_actor_consistency(
    actor_loss: Tensor,
    actor: Policy,
    augmenter: Augmenter | None,
    strategy: str,
    observations: Tensor,
    g: GroupElement | None,
    metrics: dict[str, Tensor],
) -> Tensor:
    """``actor_loss + λ·D`` for ``dac-output``/``dac-latent`` (recording D in ``metrics``), else ``actor_loss``."""
    if strategy not in ("dac-output", "dac-latent"):
        return actor_loss
    assert augmenter is not None and g is not None
    consistency = actor_consistency(actor, augmenter, observations, g)
    metrics["actor_consistency"] = consistency.detach()
    return actor_loss + augmenter.config.consistency_weight * consistency
