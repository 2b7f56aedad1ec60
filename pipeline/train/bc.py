"""Behaviour cloning: the baseline that imitates the data without any value function.

    L_π(φ) = -E_(s,a)~D [ log π_φ(a|s) ]

With the symmetry imposed exactly like the actor of IQL (per-sample weights w = 1, so ``aug-d``
and ``aug-d-online`` coincide): ``aug-d`` adds -log π(g·a|g·o), ``dac-*`` add λ·D.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.symmetry import GroupElement
from pipeline.train.augment import Augmenter, actor_consistency, views
from pipeline.train.buffer import Batch
from pipeline.train.common import Actor
from pipeline.train.config import TrainConfig


class BC:
    """Behaviour cloning for an ensemble of E members.

    Args:
        config: Training config.
        actor: Gaussian-tanh or categorical actor.
        augmenter: How the symmetry is imposed, or None.
    """

    def __init__(self, config: TrainConfig, actor: Actor, augmenter: Augmenter | None) -> None:
        self.config = config
        self.actor = actor
        self.augmenter = augmenter
        self.actor_optimizer = torch.optim.Adam(actor.parameters(), lr=config.actor_lr, fused=True)

    @property
    def modules(self) -> dict[str, nn.Module]:
        """Everything a checkpoint must hold."""
        return {"actor": self.actor}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers, by name."""
        return {"actor": self.actor_optimizer}

    def update(self, batch: Batch, g: GroupElement | None, step: int) -> dict[str, Tensor]:
        """One gradient step on the actor; returns the per-member loss ``(E,)``."""
        aug = self.augmenter
        view = views(aug, batch, g)
        batch, strategy = view.actor, view.actor_strategy
        loss = -self.actor.log_prob(batch.observations, batch.actions).mean(dim=1)
        metrics: dict[str, Tensor] = {}
        if strategy in ("aug-d", "aug-d-online"):
            assert aug is not None and g is not None
            moved = aug.transform(batch, g)
            loss = 0.5 * (loss - self.actor.log_prob(moved.observations, moved.actions).mean(dim=1))
        elif strategy in ("dac-output", "dac-latent"):
            assert aug is not None and g is not None
            consistency = actor_consistency(self.actor, aug, batch.observations, g)
            loss = loss + aug.config.consistency_weight * consistency
            metrics["actor_consistency"] = consistency.detach()
        self.actor_optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss.sum())
        self.actor_optimizer.step()
        return metrics | {"actor_loss": loss.detach()}
