"""Policy rollouts in PyBullet on train and held-out contexts, all members and contexts in lock-step.

One env per (member, context); each control step batches every live env's observation into one
policy call, so evaluating 20 members on 100 contexts costs 200 steps of one forward pass each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

PolicyFn = Callable[[Tensor], Tensor]  # (E, N, D) observations → (E, N, A) actions or (E, N) indices


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

    Args:
        policy: Batched deterministic policy.
        env_spec: ``{"id": ..., "kwargs": {...}}`` as stored in the dataset's ``eval_env_spec``.
        contexts: Context angles in rad.
        members: Ensemble size E.
        gamma: Discount of the normalised return γ^(T-1)·success (1 = reached at the first step).
        seed: Reset seed of every env (start noise is shared by all members for a fair comparison).
        device: Where the policy runs.

    Returns:
        ``success`` and ``discounted_return``, each ``(E, len(contexts))``.
    """
    envs = [[gym.make(env_spec["id"], **env_spec.get("kwargs", {})) for _ in contexts] for _ in range(members)]
    try:
        observations = np.stack(
            [
                [
                    env.reset(seed=seed + j, options={"context": float(c)})[0]
                    for j, (env, c) in enumerate(zip(row, contexts, strict=True))
                ]
                for row in envs
            ]
        )
        done = np.zeros(observations.shape[:2], dtype=bool)
        success = np.zeros_like(done)
        steps = np.zeros(done.shape, dtype=np.int64)
        while not done.all():
            with torch.no_grad():
                actions = policy(torch.as_tensor(observations, dtype=torch.float32, device=device)).cpu().numpy()
            for i, row in enumerate(envs):
                for j, env in enumerate(row):
                    if done[i, j]:
                        continue
                    observation, _, terminated, truncated, _ = env.step(actions[i, j])
                    observations[i, j] = observation
                    steps[i, j] += 1
                    success[i, j] = terminated
                    done[i, j] = terminated or truncated
    finally:
        for row in envs:
            for env in row:
                env.close()
    discounted = np.where(success, gamma ** (steps - 1.0), 0.0)
    return {"success": success.astype(np.float64), "discounted_return": discounted}
