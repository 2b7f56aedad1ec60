"""Pieces every algorithm shares: network type aliases, twin-critic evaluation, target updates."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import Tensor, nn

from models.networks import CategoricalActor, DiscreteTwinQ, EnsembleNetwork, GaussianTanhActor, GreedyQPolicy, TwinQ

Actor = GaussianTanhActor | CategoricalActor
Critic = TwinQ | DiscreteTwinQ
#: What an agent acts with: a trained actor, or the greedy policy of a discrete critic (discrete CQL).
Policy = Actor | GreedyQPolicy
NetworkT = TypeVar("NetworkT", bound=EnsembleNetwork)


def twin_q(critic: Critic, observations: Tensor, actions: Tensor) -> Tensor:
    """Both heads' Q(s, a), ``(2, E, B)``, for continuous actions or discrete action indices."""
    if isinstance(critic, DiscreteTwinQ):
        values: Tensor = critic(observations)  # (2, E, B, n)
        return values.gather(-1, actions[None, ..., None].expand(2, *actions.shape, 1)).squeeze(-1)
    q: Tensor = critic(observations, actions)
    return q


def member_noise(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Standard normal noise ``(E, *shape)``, member i from generator i."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


def target_copy(critic: NetworkT) -> NetworkT:
    """A frozen copy of ``critic`` for its targets that shares its encoder (no parameters, so one encoding of s)."""
    return copy.deepcopy(critic, {id(critic.encoder): critic.encoder}).requires_grad_(False)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Within the block ``module``'s parameters take no gradient (another network's loss reads it).

    Autograd then records no weight gradients for it (a third of its backward work); gradients still
    flow through it to its inputs. Each parameter's ``requires_grad`` is restored on exit.
    """
    flags = [parameter.requires_grad for parameter in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, polyak: float) -> None:
    """Polyak update: target ← (1 - p)·target + p·online (p = 1: hard copy)."""
    for target_parameter, parameter in zip(target.parameters(), online.parameters(), strict=True):
        target_parameter.lerp_(parameter, polyak)
    for target_buffer, buffer in zip(target.buffers(), online.buffers(), strict=True):
        target_buffer.copy_(buffer)


def gradient_step(optimizer: torch.optim.Optimizer, per_member_loss: Tensor) -> None:
    """One optimizer step on the sum of the members' losses (each member's gradient is its own)."""
    optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward(per_member_loss.sum())
    optimizer.step()
