"""Behaviour cloning: the baseline that imitates the data without any value function.

    L_π(φ) = -E_(s,a)~D [ log π_φ(a|s) ]

With the symmetry imposed exactly like the actor of IQL (per-sample weights w = 1, so ``aug-d``
and ``aug-d-online`` coincide): ``aug-d`` adds -log π(g·a|g·o), ``dac-*`` add λ·D.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.symmetry import GroupElement
from pipeline.train.augment import Augmenter, views, with_actor_consistency
from pipeline.train.buffer import Batch
from pipeline.train.common import Actor, gradient_step
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
        loss = with_actor_consistency(loss, self.actor, aug, strategy, batch.observations, g, metrics)
        gradient_step(self.actor_optimizer, loss)
        return metrics | {"actor_loss": loss.detach()}
