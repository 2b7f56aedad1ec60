"""Conservative Q-Learning (Kumar et al., 2020), CQL(H), with the symmetry imposed on the policy and/or critics.

Continuous actions, :class:`CQL` (SAC-style actor π with reparameterised samples, fixed entropy
weight η, twin critics):

    y       = r + γ(1 - d) · (min Q̄(s′, a′) - η log π(a′|s′)),     a′ ~ π(·|s′)
    L_Q(θᵢ) = E[(Q_θᵢ(s,a) - y)²]
              + α · E_s[ log Σ_{ã} exp(Q_θᵢ(s,ã) - log μ(ã)) - Q_θᵢ(s,a) ]
    L_π(φ)  = E_s[ η log π(ã|s) - min Q(s, ã) ],                      ã ~ π(·|s)

where the log-sum-exp runs over N uniform actions (μ = 1/volume), N actions from π(·|s) and N from
π(·|s′), each importance-corrected by its log-density.

Discrete actions, :class:`DiscreteCQL`: CQL-DQN (Kumar et al. 2020, §4 and App. F; the paper's
authors' ``ddqn_cql.py``; d3rlpy's ``DiscreteCQL``): double DQN plus the exact log-sum-exp term, no
actor. With twin heads Q₁, Q₂, their mean Q = ½(Q₁ + Q₂) and target heads Q̄ᵢ (a copy of Qᵢ refreshed
every ``target_update_every`` steps):

    π(s)    = argmax_a Q(s, a)                                       (the greedy policy; exported)
    y       = r + γ(1 - d) · min_i Q̄ᵢ(s′, π(s′))                      (double DQN: the online net picks a′)
    L(θᵢ)   = E[ huber(Q_θᵢ(s,a) - y) ] + α · E_s[ log Σ_ã exp Q_θᵢ(s,ã) - Q_θᵢ(s,a) ]
    huber(u) = ½u² if |u| ≤ 1 else |u| - ½                            (F.smooth_l1_loss, δ = 1)

The Huber loss is the authors' and d3rlpy's: α weighs the penalty against this TD loss, so the
paper's α = 5 only means the same thing against the same loss (against an MSE, u² is twice ½u², so
α would act half as strongly). With returns in [0, 1] the TD errors are below 1 once values settle,
where Huber is ½·MSE; the linear tail only bounds early gradients. With one head this is exactly
CQL-DQN; two heads add the min of clipped double Q in the target (d3rlpy's ``n_critics=2``).

The α-term over the twin heads. Each head gets its own α-term, so each head is trained by the
published CQL-DQN loss (the authors' ``ddqn_cql.py`` has one network; the CQL authors' continuous
code, d3rlpy's continuous ``CQL`` and our :class:`CQL` also penalise each head). d3rlpy's
``DiscreteCQL`` adds it once, on the mean head Q̄ = ½(Q₁ + Q₂), to the same summed Huber losses:

    L_d3rlpy = Σᵢ E[ huber(Q_θᵢ(s,a) - y) ] + α · E_s[ log Σ_ã exp Q̄(s,ã) - Q̄(s,a) ]

whose α-gradient on each head is half of ours when the heads agree (∂Q̄/∂Qᵢ = ½): a convention,
not a bug, but it matters. The α-term lifts the data's action by α(1 - softmax_a Q(s, ·)) per
sample against a Huber gradient of at most 1, so the data's action settles above its TD target by
about that much, and bootstrapping compounds the excess over ~1/(1 - γ) steps: twice the per-head
weight gives about twice d3rlpy's E[Q - G] on expert data. ``bench/bench_correctness.py`` runs
this class both ways against d3rlpy on the same data (5 seeds, 1200 updates): E[Q - G] 1.36 ± 0.02
as shipped, 0.76 ± 0.03 with d3rlpy's convention (``cql.penalised_heads: mean``), d3rlpy
0.76 ± 0.03; policies alike either way.

Values on mixed and suboptimal data. With μ(a|s) the data's action frequencies at s, p = softmax
Q(s, ·) and y_a the TD target of (s, a), the loss's fixed point in a table is

    μ_a · clip(Q(s, a) - y_a, -1, 1) = α (μ_a - p_a),   i.e.   Q(s, a) - y_a = α (1 - p_a / μ_a)

inside Huber's quadratic zone (``tests/pipeline/train/test_cql.py`` checks it). Kumar et al.'s
pessimism is the softmax mean, Σ_a p_a (Q(s, a) - y_a) = α(1 - Σ_a p_a²/μ_a) ≤ 0; pointwise, every
data action the softmax weighs less than the data do sits *above* its target. On expert data μ is
one action per state, p → 1 on it and the excess vanishes. On ε-greedy data (ε = 0.6, 9 actions:
μ = 0.47 on the expert's action, 0.067 on each other) the softmax cannot give the greedy action μ's
weight without lifting it: with y = 0.6 on it and 0.5 on the others, Q - y = +0.82 (α 5) and +0.89
(α 10) on the greedy action, -0.72 / -0.78 on the others; α = 1 still gives +0.47, α = 0.1 +0.07.
The greedy target then bootstraps the lifted action, so the excess compounds over ~1/(1 - γ) = 20
steps: Table 7's E[Q - G] of +2.5 to +5.3 on those recipes is CQL(H)'s fixed point at the paper's
α. d3rlpy's ``DiscreteCQL`` on the same suboptimal data (``bench_correctness.py --recipes``, 5 seeds,
``penalised_heads: mean``) has E[Q - G] +7.15 ± 0.22 against our +7.45 ± 0.11, on mixed data +0.77
against +0.76: the excess is CQL's, not this class's.

Why no actor. An earlier version trained a categorical actor on E_π[-min Q] (entropy 0) and bootstrapped
y = r + γ E_π[min Q̄(s′, ·)]. The softmax saturated (max-probability 0.99999) on whichever action led
Q early — the data's most frequent one — and a saturated softmax has a vanishing gradient
(∂p/∂logit = p(1 - p)), so the actor stopped following the critic: it matched the data's action in
44 % of expert states against 93-98 % for d3rlpy's greedy policy. The target then valued s′ by that
frozen action. Where it is not the data's action, nothing anchors its value: no TD regression ever
sees (s′, that action), the α-term only pushes it down, and every backup fed the lowered value back
in (E[Q - G] ≈ -23 after 1200 updates on returns in [0, 1], -182 to -356 after 5000). With
π = argmax Q the target reads the best-ranked action. If that is not the data's action it is valued
above the data's, so its softmax weight in the α-term is large and pulls it down until the data's
action — anchored by the TD regression — leads again: the target stays tied to values the data
regresses, and no tuning is involved.

In both, the α term pushes Q down on actions the data does not support — pessimism whose
structure follows the data's coverage, which is why the symmetry must be imposed (arXiv 2607.02288).

The paper's DA variants on a greedy policy. The policy *is* the Q-network, so "policy extraction" is
the Q-network's own training (see :mod:`pipeline.train.augment` for the notation):

- ``aug-d``: the TD + α loss on [o, g·o], each copy with its own target (g·s′ for g·s);
- ``aug-d-online``: the same, with the targets of the original transitions shared by both copies;
- ``dac-latent``: L + λ E‖h(g·o) - sg h(o)‖² on the Q-network's last hidden layer;
- ``dac-output`` on the policy (``actor``): L + λ E KL(sg softmax Q(o, ·) ‖ softmax Q(g·o, g·(·))),
  softmax(Q) being the policy's output distribution (the logits are the mean twin Q);
  on the critic: L + λ E(Q(g·o, g·a) - sg Q(o, a))², on dataset actions (both: both terms);
- ``canonical``: the Q-network, hence the policy, sees canonicalised inputs.

For every strategy but ``dac-output`` the policy and the critic are one network, so applying the
strategy to the actor, the critic or both is the same thing (:func:`shared_network_augmentation`
makes that explicit: it applies them to ``both``). Only ``dac-output`` differs: its policy term
compares action distributions, its critic term dataset-action values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)
from torch import Tensor, nn

from models.networks import DiscreteTwinQ, GaussianTanhActor, GreedyQPolicy, TwinQ
from models.symmetry import GroupElement
from pipeline.train.augment import Augmenter, views, with_actor_consistency, with_critic_consistency
from pipeline.train.buffer import Batch
from pipeline.train.common import Critic, frozen, gradient_step, member_noise, soft_update, target_copy, twin_q
from pipeline.train.config import AugmentationConfig, TrainConfig


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
    """CQL(H) for an ensemble of E members, continuous actions (SAC-style actor).

    Args:
        config: Training config (``config.cql`` holds α, the number of sampled actions, η).
        actor: Gaussian-tanh actor.
        critic: Twin Q critic.
        augmenter: How the symmetry is imposed, or None.
        generators: One generator per member, for the policy and uniform action samples.
    """

    def __init__(
        self,
        config: TrainConfig,
        actor: GaussianTanhActor,
        critic: Critic,
        augmenter: Augmenter | None,
        generators: list[torch.Generator],
    ) -> None:
        self.config = config
        self.actor, self.critic = actor, critic
        self.critic_target = target_copy(critic)
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
        """ã ~ π(·|s) with its log-density, ``(E, B, A)`` and ``(E, B)``."""
        shape = (*observations.shape[1:-1], int(self.actor.action_low.numel()))
        return self.actor.act(observations, member_noise(self.generators, shape, observations.device))

    def _sample_many(self, observations: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """N samples ã ~ π(·|s) per state, ``(E, B, n, A)`` and ``(E, B, n)`` (the same draws as n repeats of s)."""
        states, width = observations.shape[1], int(self.actor.action_low.numel())
        noise = member_noise(self.generators, (states * n, width), observations.device)
        return self.actor.act_many(observations, noise.reshape(noise.shape[0], states, n, width))

    def _next_value(self, batch: Batch) -> Tensor:
        """Soft next value min Q̄(s′, a′) - η log π(a′|s′), a′ ~ π(·|s′)."""
        eta = self.config.cql.entropy
        action, log_prob = self._sample(batch.next_observations)
        return twin_q(self.critic_target, batch.next_observations, action).min(dim=0).values - eta * log_prob

    def _conservative_penalty(self, batch: Batch, q_data: Tensor) -> Tensor:
        """α-term per head and member, ``(2, E)``: E_s[logsumexp Q(s, ·) - Q(s, a)]."""
        o = batch.observations
        n = self.config.cql.sampled_actions
        low, high = self.actor.action_low, self.actor.action_high
        members, states, width = o.shape[0], o.shape[1], low.numel()
        # n candidates per state; networks see each state once (the critic's state part, the actor's trunk).
        uniform = torch.stack([torch.rand((states * n, width), generator=g) for g in self.generators])
        uniform = (low + uniform.to(o.device) * (high - low)).reshape(members, states, n, width)
        log_uniform = -torch.log(high - low).sum()
        with torch.no_grad():
            current, log_current = self._sample_many(o, n)
            following, log_following = self._sample_many(batch.next_observations, n)
        assert isinstance(self.critic, TwinQ)
        candidates = [
            self.critic.forward_actions(o, uniform) - log_uniform,
            self.critic.forward_actions(o, current) - log_current,
            self.critic.forward_actions(o, following) - log_following,
        ]
        stacked = torch.stack(candidates, dim=-1)  # (2, E, B, n, 3)
        return conservative_gap(stacked.flatten(-2), q_data, log_count=math.log(3 * n))

    def _actor_objective(self, observations: Tensor) -> Tensor:
        """Per-sample SAC-style actor loss, ``(E, B)``."""
        eta = self.config.cql.entropy
        action, log_prob = self._sample(observations)
        return eta * log_prob - self._actor_q(observations, action)

    def _actor_q(self, observations: Tensor, actions: Tensor) -> Tensor:
        """The twin min Q(s, ã) for the actor's loss: a gradient for ã, none for the critic's weights."""
        with frozen(self.critic):
            return twin_q(self.critic, observations, actions).min(dim=0).values

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch, g: GroupElement | None, step: int) -> dict[str, Tensor]:
        """One gradient step on both Q heads and the actor; returns per-member losses ``(E,)``.

        Every network shares one encoder, which encodes each of the update's observation tensors once.
        """
        with self.critic.encoder.reuse():
            return self._update(batch, g, step)

    def _update(self, batch: Batch, g: GroupElement | None, step: int) -> dict[str, Tensor]:
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
        critic_loss = with_critic_consistency(critic_loss, self.critic, None, aug, strategy, original, g, metrics)
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
        action, log_prob = self._sample(moved)
        back = self.augmenter.act_actions(action, sym.invert(g))
        return eta * log_prob - self._actor_q(observations, back)


def shared_network_augmentation(config: AugmentationConfig) -> AugmentationConfig:
    """The augmentation of a greedy-Q policy: every strategy but ``dac-output`` acts on the one Q-network.

    The greedy policy is its critic, so applying ``aug-d``, ``aug-d-online``, ``dac-latent`` or
    ``canonical`` to the actor, the critic or both is the same thing; this says ``both``, so that the
    agent also canonicalises (or not) the inputs of its policy and its critic alike.
    """
    if config.strategy in ("none", "dac-output"):
        return config
    return config.model_copy(update={"applied_to": "both"})


def huber(u: Tensor) -> Tensor:
    """The Huber loss ½u² for |u| ≤ 1, |u| - ½ beyond, elementwise (``F.smooth_l1_loss`` with δ = 1)."""
    return F.huber_loss(u, torch.zeros_like(u), reduction="none", delta=1.0)


class DiscreteCQL:
    """CQL-DQN for an ensemble of E members: double DQN + the exact CQL(H) term, greedy policy, no actor.

    Args:
        config: Training config (``config.cql.alpha`` is α; the critic learning rate is the only one used).
        critic: Twin discrete critic; its greedy policy is the agent's policy.
        augmenter: How the symmetry is imposed (see :func:`shared_network_augmentation`), or None.
    """

    def __init__(self, config: TrainConfig, critic: DiscreteTwinQ, augmenter: Augmenter | None) -> None:
        self.config = config
        self.critic = critic
        self.actor = GreedyQPolicy(critic)  # the critic's argmax: no weights of its own
        self.critic_target = target_copy(critic)
        self.augmenter = augmenter
        self.critic_optimizer = torch.optim.Adam(critic.parameters(), lr=config.critic_lr, fused=True)

    @property
    def modules(self) -> dict[str, nn.Module]:
        """Everything a checkpoint must hold."""
        return {"critic": self.critic, "critic_target": self.critic_target}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers, by name."""
        return {"critic": self.critic_optimizer}

    @torch.no_grad()
    def _next_value(self, batch: Batch) -> Tensor:
        """Double-DQN next value min_i Q̄ᵢ(s′, argmax_a Q(s′, a)), ``(E, B)``."""
        greedy = self.actor.deterministic(batch.next_observations)
        target: Tensor = self.critic_target(batch.next_observations)  # (2, E, B, n)
        chosen = target.gather(-1, greedy[None, ..., None].expand(2, *greedy.shape, 1)).squeeze(-1)
        return chosen.min(dim=0).values

    def _conservative_penalty(self, q_all: Tensor, q_data: Tensor) -> Tensor:
        """The α-term per member, ``(E,)``: CQL-DQN's gap on each head, summed over the heads.

        With ``cql.penalised_heads: mean``, d3rlpy's convention instead: the gap of the mean head ½(Q₁ + Q₂).

        Args:
            q_all: Every head's Q of every action, ``(2, E, B, n)``.
            q_data: Every head's Q of the dataset actions, ``(2, E, B)``.
        """
        if self.config.cql.penalised_heads == "mean":
            return conservative_gap(q_all.mean(dim=0), q_data.mean(dim=0))
        return conservative_gap(q_all, q_data).sum(dim=0)

    def update(self, batch: Batch, g: GroupElement | None, step: int) -> dict[str, Tensor]:
        """One gradient step on both Q heads; returns per-member losses ``(E,)``."""
        aug = self.augmenter
        view = views(aug, batch, g)
        original, critic_batch, strategy = view.original, view.critic, view.critic_strategy
        metrics: dict[str, Tensor] = {}

        # ---- TD targets: the greedy action at s′ (online net), valued by the target heads
        next_value = self._next_value(original if strategy == "aug-d-online" else critic_batch)
        if strategy == "aug-d-online":  # targets from the original transitions, shared by both copies
            next_value = next_value.repeat(1, 2)
        td_target = critic_batch.rewards + self.config.gamma * (1.0 - critic_batch.terminals) * next_value

        # ---- Huber TD loss + α·(logsumexp Q(s,·) - Q(s,a)), per head, summed over the heads
        q_all = self.critic(critic_batch.observations)  # (2, E, B, n)
        actions = critic_batch.actions
        q = q_all.gather(-1, actions[None, ..., None].expand(2, *actions.shape, 1)).squeeze(-1)
        td = huber(q - td_target[None]).mean(dim=2).sum(dim=0)
        penalty = self._conservative_penalty(q_all, q)
        loss = td + self.config.cql.alpha * penalty

        # ---- the symmetry: consistency of the critic's values and/or of the policy's outputs softmax(Q)
        loss = with_critic_consistency(loss, self.critic, None, aug, strategy, original, g, metrics)
        if view.actor_strategy == "dac-output":
            loss = with_actor_consistency(loss, self.actor, aug, "dac-output", view.actor.observations, g, metrics)
        gradient_step(self.critic_optimizer, loss)
        metrics |= {"q_loss": td.detach(), "cql_penalty": penalty.detach()}

        if step % self.config.target_update_every == 0:
            soft_update(self.critic_target, self.critic, self.config.target_polyak)
        return metrics
