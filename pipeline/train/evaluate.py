"""Policy rollouts in PyBullet on train and held-out contexts, all members and contexts in lock-step.

One env per (member, context); each control step batches every env's observation into one
policy call (:func:`sim.rollout.run_lockstep`), so evaluating 20 members on 100 contexts costs
200 steps of one forward pass each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from sim.contexts import ContextSetName
from sim.robots.env import env_contexts
from sim.rollout import run_lockstep

PolicyFn = Callable[[Tensor], Tensor]  # (E, N, D) observations → (E, N, A) actions or (E, N) indices


#: At most this many PyBullet envs exist at once (each holds ~30 MB); larger evaluations run in chunks.
MAX_ENVS = 64


def evaluation_angles(env_spec: dict[str, Any], name: ContextSetName, episodes: int) -> NDArray[np.float64]:
    """The context angle of each of ``episodes`` episodes on one context set of an eval env.

    The set's first ``episodes`` angles, cycled (the episodes then differ by their reset seeds) when
    the set is smaller, e.g. a single training context.
    """
    angles: NDArray[np.float64] = np.resize(env_contexts(env_spec).angles(name), episodes)
    return angles


def rollout(
    policy: PolicyFn,
    env_spec: dict[str, Any],
    contexts: NDArray[np.float64],
    members: int,
    gamma: float,
    seed: int,
    device: torch.device,
) -> dict[str, NDArray[np.float64]]:
    """Run one episode per (member, context).

    Contexts are run in chunks of at most :data:`MAX_ENVS` envs (all members of a context in the
    same chunk), so memory stays bounded however many contexts and members are evaluated.

    Args:
        policy: Batched deterministic policy.
        env_spec: ``{"id": ..., "kwargs": {...}}`` as stored in the dataset's ``eval_env_spec``.
        contexts: Context angles in rad.
        members: Ensemble size E.
        gamma: Discount of the normalised return γ^(T-1)·success (1 = reached at the first step).
        seed: Episode j resets with seed ``seed + j``, for every member (start noise is shared by all
            members for a fair comparison).
        device: Where the policy runs.

    Returns:
        ``success`` and ``discounted_return``, each ``(E, len(contexts))``.
    """
    chunk = max(1, MAX_ENVS // members)
    success = np.zeros((members, len(contexts)))
    returns = np.zeros((members, len(contexts)))
    envs = [gym.make(env_spec["id"], **env_spec.get("kwargs", {})) for _ in range(members * min(chunk, len(contexts)))]
    try:
        for start in range(0, len(contexts), chunk):
            part = contexts[start : start + chunk]
            shape = (members, len(part))

            def batched(observations: NDArray[np.float32], shape: tuple[int, int] = shape) -> NDArray[Any]:
                with torch.no_grad():
                    actions = policy(torch.as_tensor(observations, device=device).reshape(*shape, -1))
                return actions.reshape(shape[0] * shape[1], *actions.shape[2:]).cpu().numpy()

            episodes = run_lockstep(
                envs[: members * len(part)],
                batched,
                seeds=[seed + start + j for _ in range(members) for j in range(len(part))],
                contexts=list(part) * members,
            )
            success[:, start : start + len(part)] = episodes.success.reshape(shape)
            returns[:, start : start + len(part)] = episodes.discounted_return(gamma).reshape(shape)
    finally:
        for env in envs:
            env.close()
    return {"success": success, "discounted_return": returns}
