"""The offline dataset as one device-resident buffer, loaded once from Minari.

Sampling never goes back to Minari: every member of the vectorised model draws its own minibatch
indices from its own generator, and the batch is gathered on the device as ``(E, B, ...)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.io import UserInputError


class DatasetError(UserInputError):
    """The Minari dataset is missing, empty or not a symgate dataset; the message names it."""


@dataclass
class Batch:
    """A minibatch per member: every tensor has leading dims ``(E, B)``."""

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    next_observations: Tensor
    terminals: Tensor


@dataclass
class OfflineData:
    """All transitions of a dataset on one device, plus what training needs to know about it."""

    dataset_id: str
    observations: Tensor  # (N, D) float32
    actions: Tensor  # (N, A) float32, or (N,) int64 for discrete actions
    rewards: Tensor  # (N,)
    next_observations: Tensor  # (N, D)
    terminals: Tensor  # (N,) 1.0 where the episode terminated
    returns_to_go: Tensor  # (N,) discounted return from this transition to the end of its episode
    observation_names: tuple[str, ...]
    action_names: tuple[str, ...]
    action_low: Tensor  # (A,)
    action_high: Tensor  # (A,)
    discrete_torques: np.ndarray | None  # (n_actions, A) torque table of discrete actions, else None
    metadata: dict[str, Any]

    @property
    def size(self) -> int:
        """Number of transitions."""
        return int(self.rewards.shape[0])

    @property
    def discrete(self) -> bool:
        """Whether actions are indices into ``discrete_torques``."""
        return self.discrete_torques is not None

    def sample(self, generators: Sequence[torch.Generator], batch_size: int) -> Batch:
        """One minibatch per member, each drawn from its own generator (uniform, with replacement)."""
        index = torch.stack([torch.randint(self.size, (batch_size,), generator=g) for g in generators])
        index = index.to(self.rewards.device, non_blocking=True)
        return Batch(
            observations=self.observations[index],
            actions=self.actions[index],
            rewards=self.rewards[index],
            next_observations=self.next_observations[index],
            terminals=self.terminals[index],
        )


def load_offline_data(dataset_id: str, device: torch.device, gamma: float) -> OfflineData:
    """Load a symgate Minari dataset into device memory.

    Args:
        dataset_id: Minari id (looked up in ``MINARI_DATASETS_PATH``).
        device: Where the tensors live.
        gamma: Discount for the returns-to-go (used to estimate the amount of pessimism).

    Raises:
        DatasetError: Unknown id, empty dataset, or a dataset without symgate metadata.
    """
    import minari  # heavy; only when training

    try:
        dataset = minari.load_dataset(dataset_id)
    except (FileNotFoundError, ValueError) as error:
        raise DatasetError(f"dataset {dataset_id!r}: cannot load it with Minari: {error}") from error
    meta = dataset.storage.metadata.get("symgate")
    if not isinstance(meta, dict):
        raise DatasetError(f"dataset {dataset_id!r}: no symgate metadata (was it written by `symgate ingest`?)")
    observations, actions, rewards, next_observations, terminals, returns = [], [], [], [], [], []
    for episode in dataset.iterate_episodes():
        steps = len(episode.rewards)
        observations.append(episode.observations[:-1])
        next_observations.append(episode.observations[1:])
        actions.append(episode.actions)
        rewards.append(episode.rewards)
        terminals.append(episode.terminations.astype(np.float32))
        running, rtg = 0.0, np.zeros(steps)
        for k in range(steps - 1, -1, -1):
            running = float(episode.rewards[k]) + gamma * running
            rtg[k] = running
        returns.append(rtg)
    if not rewards:
        raise DatasetError(f"dataset {dataset_id!r}: holds no episodes")
    discrete = meta.get("discrete_action_torques")
    space = dataset.action_space
    if discrete is None:
        low, high = np.asarray(space.low, dtype=np.float32), np.asarray(space.high, dtype=np.float32)
    else:
        table = np.asarray(discrete, dtype=np.float64)
        low, high = table.min(axis=0).astype(np.float32), table.max(axis=0).astype(np.float32)

    def tensor(parts: list[Any], dtype: torch.dtype) -> Tensor:
        return torch.as_tensor(np.concatenate(parts), dtype=dtype, device=device)

    return OfflineData(
        dataset_id=dataset_id,
        observations=tensor(observations, torch.float32),
        actions=tensor(actions, torch.float32 if discrete is None else torch.int64),
        rewards=tensor(rewards, torch.float32),
        next_observations=tensor(next_observations, torch.float32),
        terminals=tensor(terminals, torch.float32),
        returns_to_go=tensor(returns, torch.float32),
        observation_names=tuple(meta["observation_names"]),
        action_names=tuple(meta["action_names"]),
        action_low=torch.as_tensor(low, device=device),
        action_high=torch.as_tensor(high, device=device),
        discrete_torques=None if discrete is None else np.asarray(discrete, dtype=np.float64),
        metadata={"symgate": meta, "eval_env_spec": json.loads(dataset.storage.metadata["eval_env_spec"])},
    )
