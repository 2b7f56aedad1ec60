"""Conservative Q-Learning (Kumar et al., 2020), CQL(H), with the symmetry imposed on actor and/or critics.

Continuous actions (SAC-style actor π with reparameterised samples, fixed entropy weight η):

    y       = r + γ(1 - d) · (min Q̄(s′, a′) - η log π(a′|s′)),     a′ ~ π(·|s′)
    L_Q(θᵢ) = E[(Q_θᵢ(s,a) - y)²]
              + α · E_s[ log Σ_{ã} exp(Q_θᵢ(s,ã) - log μ(ã)) - Q_θᵢ(s,a) ]
    L_π(φ)  = E_s[ η log π(ã|s) - min Q(s, ã) ],                      ã ~ π(·|s)

where the log-sum-exp runs over N uniform actions (μ = 1/volume), N actions from π(·|s) and N from
π(·|s′), each importance-corrected by its log-density. Discrete actions replace the sampled
log-sum-exp by the exact one over all actions, and the actor by
L_π = E_s[Σ_a π(a|s)(η log π(a|s) - min Q(s,a))]. The α term pushes Q down on actions the data
does not support — pessimism whose structure follows the data's coverage, which is why the
symmetry must be imposed (arXiv 2607.02288).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from models.networks import CategoricalActor, GaussianTanhActor
from models.symmetry import GroupElement
from pipeline.train.augment import Augmenter, critic_consistency, views, with_actor_consistency
from pipeline.train.buffer import Batch
from pipeline.train.common import Actor, Critic, gradient_step, member_noise, soft_update, twin_q
from pipeline.train.config import TrainConfig


def conservative_gap(q_candidates: Tensor, q_data: Tensor, log_count: float = 0.0) -> Tensor:
    """The CQL(H) gap, averaged over the batch: E_s[log Σ_ã exp Q(s,ã) - log_count - Q(s,a)].

    Args:
        q_candidates: Q over every discrete action, or importance-corrected Q of sampled actions, ``(..., B, K)``.
        q_data: Q of the dataset actions, ``(..., B)``.
        log_count: log of the number of samples (sampled actions estimate a mean, not a sum); 0 for discrete.

    Returns:
        ``(...)``.
    """
    return (torch.logsumexp(q_candidates, dim=-1) - log_count - q_data).mean(dim=-1)


class CQL:
    """CQL(H) for an ensemble of E members, continuous or discrete actions.

    Args:
        config: Training config (``config.cql`` holds α, the number of sampled actions, η).
        actor: Gaussian-tanh (continuous) or categorical (discrete) actor.
        critic: Twin Q critic.
        augmenter: How the symmetry is imposed, or None.
        generators: One generator per member, for the policy and uniform action samples.
    """

    def __init__(
        self,
        config: TrainConfig,
        actor: Actor,
        critic: Critic,
        augmenter: Augmenter | None,
        generators: list[torch.Generator],
    ) -> None:
        self.config = config
        self.actor, self.critic = actor, critic
        self.critic_target = copy.deepcopy(critic).requires_grad_(False)
        self.augmenter = augmenter
        self.generators = generators
        self.actor_optimizer = torch.optim.Adam(actor.parameters(), lr=config.actor_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(critic.parameters(), lr=config.critic_lr, fused=True)

    @property
    def modules(self) -> dict[str, nn.Module]:
        """Everything a checkpoint must hold."""
        return {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers, by name."""
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}

    # ------------------------------------------------------------------ policy samples
    def _sample(self, observations: Tensor) -> tuple[Tensor, Tensor]:
        """ã ~ π(·|s) with its log-density, ``(E, B, A)`` and ``(E, B)`` (continuous)."""
        assert isinstance(self.actor, GaussianTanhActor)
        shape = (*observations.shape[1:-1], int(self.actor.action_low.numel()))
        return self.actor.act(observations, member_noise(self.generators, shape, observations.device))

    def _next_value(self, batch: Batch) -> Tensor:
        """Soft next value min Q̄(s′, a′) - η log π(a′|s′), a′ ~ π(·|s′) (expectation over π if discrete)."""
        eta = self.config.cql.entropy
        if isinstance(self.actor, CategoricalActor):
            logits, _ = self.actor(batch.next_observations)
            log_p = torch.log_softmax(logits, dim=-1)
            q: Tensor = self.critic_target(batch.next_observations).min(dim=0).values
            return (log_p.exp() * (q - eta * log_p)).sum(dim=-1)
        action, log_prob = self._sample(batch.next_observations)
        return twin_q(self.critic_target, batch.next_observations, action).min(dim=0).values - eta * log_prob

    def _conservative_penalty(self, batch: Batch, q_data: Tensor) -> Tensor:
        """α-term per head and member, ``(2, E)``: E_s[logsumexp Q(s, ·) - Q(s, a)]."""
        o = batch.observations
        if isinstance(self.actor, CategoricalActor):
            return conservative_gap(self.critic(o), q_data)
        n = self.config.cql.sampled_actions
        low, high = self.actor.action_low, self.actor.action_high

        def each_n_times(x: Tensor) -> Tensor:  # (E, B, D) → (E, B·n, D), every state n times in a row
            return x.unsqueeze(2).expand(*x.shape[:2], n, x.shape[-1]).reshape(x.shape[0], -1, x.shape[-1])

        repeated, next_repeated = each_n_times(o), each_n_times(batch.next_observations)
        uniform = torch.stack([torch.rand((repeated.shape[1], low.numel()), generator=g) for g in self.generators])
        uniform = low + uniform.to(o.device) * (high - low)
        log_uniform = -torch.log(high - low).sum()
        with torch.no_grad():
            current, log_current = self._sample(repeated)
            following, log_following = self._sample(next_repeated)
        candidates = [
            twin_q(self.critic, repeated, uniform) - log_uniform,
            twin_q(self.critic, repeated, current) - log_current,
            twin_q(self.critic, repeated, following) - log_following,
        ]
        stacked = torch.stack([c.reshape(2, o.shape[0], o.shape[1], n) for c in candidates], dim=-1)
        return conservative_gap(stacked.flatten(-2), q_data, log_count=math.log(3 * n))

    def _actor_objective(self, observations: Tensor) -> Tensor:
        """Per-sample SAC-style actor loss, ``(E, B)``."""
        eta = self.config.cql.entropy
        if isinstance(self.actor, CategoricalActor):
            logits, _ = self.actor(observations)
            log_p = torch.log_softmax(logits, dim=-1)
            q: Tensor = self.critic(observations).min(dim=0).values.detach()
            return (log_p.exp() * (eta * log_p - q)).sum(dim=-1)
        action, log_prob = self._sample(observations)
        return eta * log_prob - twin_q(self.critic, observations, action).min(dim=0).values

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch, g: GroupElement | None, step: int) -> dict[str, Tensor]:
        """One gradient step on both Q heads and the actor; returns per-member losses ``(E,)``."""
        aug = self.augmenter
        view = views(aug, batch, g)
        original, critic_batch, actor_batch, strategy = view.original, view.critic, view.actor, view.critic_strategy
        metrics: dict[str, Tensor] = {}

        with torch.no_grad():
            source = original if strategy == "aug-d-online" else critic_batch
            next_value = self._next_value(source)
            if strategy == "aug-d-online":
                next_value = next_value.repeat(1, 2)
            td_target = critic_batch.rewards + self.config.gamma * (1.0 - critic_batch.terminals) * next_value
        q = twin_q(self.critic, critic_batch.observations, critic_batch.actions)
        bellman = ((q - td_target[None]) ** 2).mean(dim=2).sum(dim=0)
        penalty = self._conservative_penalty(critic_batch, q).sum(dim=0)
        critic_loss = bellman + self.config.cql.alpha * penalty
        if strategy in ("dac-output", "dac-latent"):
            assert aug is not None and g is not None
            transformed = aug.transform(original, g)
            consistency = critic_consistency(self.critic, None, original, transformed, strategy == "dac-latent")
            critic_loss = critic_loss + aug.config.consistency_weight * consistency
            metrics["critic_consistency"] = consistency.detach()
        gradient_step(self.critic_optimizer, critic_loss)
        metrics |= {"q_loss": bellman.detach(), "cql_penalty": penalty.detach()}

        o = actor_batch.observations
        actor_strategy = view.actor_strategy
        objective = self._actor_objective(o)
        if actor_strategy == "aug-d":
            assert aug is not None and g is not None
            objective = 0.5 * (objective + self._actor_objective(aug.symmetry.act_observation(o, g)))
        elif actor_strategy == "aug-d-online":  # the augmented action is valued by the critic at o
            assert aug is not None and g is not None
            moved_objective = self._online_objective(o, g)
            objective = 0.5 * (objective + moved_objective)
        actor_loss = objective.mean(dim=1)
        actor_loss = with_actor_consistency(actor_loss, self.actor, aug, actor_strategy, o, g, metrics)
        gradient_step(self.actor_optimizer, actor_loss)
        metrics["actor_loss"] = actor_loss.detach()

        if step % self.config.target_update_every == 0:
            soft_update(self.critic_target, self.critic, self.config.target_polyak)
        return metrics

    def _online_objective(self, observations: Tensor, g: GroupElement) -> Tensor:
        """Aug-D-Online for an actor-critic: π acts on g·o, its action is mapped back and valued at o."""
        assert self.augmenter is not None
        sym = self.augmenter.symmetry
        moved = sym.act_observation(observations, g)
        eta = self.config.cql.entropy
        if isinstance(self.actor, CategoricalActor):
            logits, _ = self.actor(moved)
            log_p = torch.log_softmax(logits, dim=-1)
            n = logits.shape[-1]
            every_action = torch.arange(n, device=logits.device).expand(*logits.shape)
            inverse = sym.invert(g)
            per_action = GroupElement(
                angle=inverse.angle[..., None].expand(*logits.shape),
                mirror=inverse.mirror[..., None].expand(*logits.shape),
            )
            q: Tensor = self.critic(observations).min(dim=0).values.detach()
            q_moved = q.gather(-1, self.augmenter.act_actions(every_action, per_action))
            return (log_p.exp() * (eta * log_p - q_moved)).sum(dim=-1)
        action, log_prob = self._sample(moved)
        back = self.augmenter.act_actions(action, sym.invert(g))
        return eta * log_prob - twin_q(self.critic, observations, back).min(dim=0).values
