"""Implicit Q-Learning (Kostrikov, Nair & Levine, 2022) with the symmetry imposed on actor and/or critics.

With twin target critics Q̄ = min(Q̄₁, Q̄₂), expectile τ, inverse temperature β and discount γ:

    L_V(ψ)  = E_(s,a)~D [ L₂^τ(Q̄(s,a) - V_ψ(s)) ],        L₂^τ(u) = |τ - 1(u < 0)| · u²
    L_Q(θᵢ) = E_(s,a,r,s′)~D [ (r + γ(1 - d) V_ψ(s′) - Q_θᵢ(s,a))² ]
    L_π(φ)  = -E_(s,a)~D [ min(exp(β (Q̄(s,a) - V_ψ(s))), w_max) · log π_φ(a|s) ]

V is pessimistic through the expectile: it never queries actions outside the data. The actor is
extracted by advantage-weighted regression on dataset actions. For continuous actions
log π_φ(a|s) is, by default (``actor_likelihood: tanh-mean``, the IQL authors' and d3rlpy's
actor), the Gaussian of the normalised action y ∈ [-1, 1] around the squashed mean,
log 𝒩(y; tanh μ_φ(s), σ_φ(s)): finite on the action bounds, where a bang-bang expert's torques
lie, and maximised by the weighted mean of the data's y, which the deterministic action tanh μ
can reach (see :class:`~models.networks.GaussianTanhActor`); the paper's data-augmentation
variants (see :mod:`pipeline.train.augment`) change this extraction step, and optionally the
critic losses. Every loss is computed per ensemble member and summed, so members stay independent.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.networks import ValueNet
from models.symmetry import GroupElement
from pipeline.train.augment import Augmenter, views, with_actor_consistency, with_critic_consistency
from pipeline.train.buffer import Batch
from pipeline.train.common import Actor, Critic, gradient_step, soft_update, target_copy, twin_q
from pipeline.train.config import TrainConfig


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """L₂^τ(u) = |τ - 1(u < 0)| · u², elementwise."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff**2


def awr_weights(advantage: Tensor, temperature: float, max_weight: float) -> Tensor:
    """Advantage-weighted-regression weights min(exp(β·A), w_max), elementwise."""
    return torch.clamp(torch.exp(temperature * advantage), max=max_weight)


class IQL:
    """IQL for an ensemble of E members, continuous or discrete actions.

    Args:
        config: Training config (``config.iql`` holds τ, β and the weight clip).
        actor: Gaussian-tanh or categorical actor.
        critic: Twin Q critic (continuous or discrete).
        value: State-value network.
        augmenter: How the symmetry is imposed, or None for plain IQL.
    """

    def __init__(
        self, config: TrainConfig, actor: Actor, critic: Critic, value: ValueNet, augmenter: Augmenter | None
    ) -> None:
        self.config = config
        self.actor, self.critic, self.value = actor, critic, value
        self.critic_target = target_copy(critic)
        self.augmenter = augmenter
        self.actor_optimizer = torch.optim.Adam(actor.parameters(), lr=config.actor_lr, fused=True)
        critic_parameters = [*critic.parameters(), *value.parameters()]
        self.critic_optimizer = torch.optim.Adam(critic_parameters, lr=config.critic_lr, fused=True)

    @property
    def modules(self) -> dict[str, nn.Module]:
        """Everything a checkpoint must hold."""
        return {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target, "value": self.value}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers, by name."""
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}

    def update(self, batch: Batch, g: GroupElement | None, step: int) -> dict[str, Tensor]:
        """One gradient step on V, both Q heads and the actor; returns per-member losses ``(E,)``.

        Every network shares one encoder, which encodes each of the update's observation tensors once.
        """
        with self.critic.encoder.reuse():
            return self._update(batch, g, step)

    def _update(self, batch: Batch, g: GroupElement | None, step: int) -> dict[str, Tensor]:
        cfg, aug = self.config.iql, self.augmenter
        view = views(aug, batch, g)
        original, critic_batch, actor_batch, strategy = view.original, view.critic, view.actor, view.critic_strategy
        metrics: dict[str, Tensor] = {}

        # ---- critics: expectile V, then Bellman Q towards r + γ(1-d)V(s′)
        with torch.no_grad():
            target_q = twin_q(self.critic_target, critic_batch.observations, critic_batch.actions).min(dim=0).values
            if strategy == "aug-d-online":  # targets from the original transitions only, shared by both copies
                next_v = self.value(original.next_observations).repeat(1, 2)
            else:
                next_v = self.value(critic_batch.next_observations)
            td_target = critic_batch.rewards + self.config.gamma * (1.0 - critic_batch.terminals) * next_v
        v = self.value(critic_batch.observations)
        value_loss = expectile_loss(target_q - v, cfg.expectile).mean(dim=1)
        q = twin_q(self.critic, critic_batch.observations, critic_batch.actions)
        q_loss = ((q - td_target[None]) ** 2).mean(dim=2).sum(dim=0)
        critic_loss = value_loss + q_loss
        critic_loss = with_critic_consistency(critic_loss, self.critic, self.value, aug, strategy, original, g, metrics)
        # ---- advantage weights for the actor, from the critics before this step (as in the original IQL)
        actor_strategy = view.actor_strategy

        def weights(observations: Tensor, actions: Tensor) -> Tensor:
            with torch.no_grad():
                q_target = twin_q(self.critic_target, observations, actions).min(dim=0).values
                return awr_weights(q_target - self.value(observations), cfg.temperature, cfg.max_weight)

        o, a = actor_batch.observations, actor_batch.actions
        # Same transitions as the value loss: reuse its Q̄ and V instead of evaluating them again.
        w = (
            awr_weights(target_q - v.detach(), cfg.temperature, cfg.max_weight)
            if actor_batch is critic_batch
            else weights(o, a)
        )
        moved: Batch | None = None
        if actor_strategy in ("aug-d", "aug-d-online"):
            assert aug is not None and g is not None
            moved = aug.transform(actor_batch, g)
        w_g = weights(moved.observations, moved.actions) if moved is not None and actor_strategy == "aug-d" else w

        gradient_step(self.critic_optimizer, critic_loss)
        metrics |= {"value_loss": value_loss.detach(), "q_loss": q_loss.detach()}

        # ---- actor: advantage-weighted regression on dataset actions
        log_prob = self.actor.log_prob(o, a)
        if moved is not None:
            log_prob_g = self.actor.log_prob(moved.observations, moved.actions)
            actor_loss = -0.5 * (w * log_prob + w_g * log_prob_g).mean(dim=1)
        else:
            actor_loss = -(w * log_prob).mean(dim=1)
        actor_loss = with_actor_consistency(actor_loss, self.actor, aug, actor_strategy, o, g, metrics)
        gradient_step(self.actor_optimizer, actor_loss)
        metrics |= {"actor_loss": actor_loss.detach(), "advantage_weight": w.mean(dim=1)}

        if step % self.config.target_update_every == 0:
            soft_update(self.critic_target, self.critic, self.config.target_polyak)
        return metrics
