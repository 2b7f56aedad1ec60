"""The offline dataset as one device-resident buffer, loaded once from Minari.

Sampling never goes back to Minari: every member of the vectorised model draws its own minibatch
indices from its own generator, and the batch is gathered on the device as ``(E, B, ...)``.
Members may also train on datasets of their own (one per seed, as the paper's protocol asks):
the datasets are concatenated and member i samples only from its own slice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.datasets import DatasetError, episodes, open_dataset


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
    member_slices: tuple[tuple[int, int], ...] | None = None  # (start, stop) of member i's dataset; None: shared

    @property
    def dataset_ids(self) -> tuple[str, ...]:
        """The Minari ids this buffer was loaded from (one per member when ``member_slices`` is set)."""
        return tuple(self.dataset_id.split(ID_SEPARATOR))

    @property
    def size(self) -> int:
        """Number of transitions."""
        return int(self.rewards.shape[0])

    @property
    def discrete(self) -> bool:
        """Whether actions are indices into ``discrete_torques``."""
        return self.discrete_torques is not None

    def sample(self, generators: Sequence[torch.Generator], batch_size: int) -> Batch:
        """One minibatch per member, each drawn from its own generator (uniform, with replacement).

        With ``member_slices``, member i draws only from its own dataset.
        """
        if self.member_slices is None:
            index = torch.stack([torch.randint(self.size, (batch_size,), generator=g) for g in generators])
        else:
            if len(generators) != len(self.member_slices):
                raise ValueError(f"{len(generators)} members but {len(self.member_slices)} per-member datasets")
            index = torch.stack(
                [
                    torch.randint(start, stop, (batch_size,), generator=g)
                    for g, (start, stop) in zip(generators, self.member_slices, strict=True)
                ]
            )
        index = index.to(self.rewards.device, non_blocking=True)
        return Batch(
            observations=self.observations[index],
            actions=self.actions[index],
            rewards=self.rewards[index],
            next_observations=self.next_observations[index],
            terminals=self.terminals[index],
        )


#: Joins the ids of per-member datasets in ``OfflineData.dataset_id``.
ID_SEPARATOR = ","


def load_offline_data(dataset_ids: str | Sequence[str], device: torch.device, gamma: float) -> OfflineData:
    """Load a symgate Minari dataset into device memory, or one dataset per member.

    Args:
        dataset_ids: Minari id (looked up in ``MINARI_DATASETS_PATH``), or a sequence of ids, one per
            ensemble member, which must agree on spaces, names and the evaluation env.
        device: Where the tensors live.
        gamma: Discount for the returns-to-go (used to estimate the amount of pessimism).

    Raises:
        DatasetError: Unknown id, unreadable (e.g. truncated) files, empty dataset, a dataset without
            symgate metadata, or per-member datasets that disagree.
    """
    if isinstance(dataset_ids, str):
        return _load_one(dataset_ids, device, gamma)
    parts = [_load_one(dataset_id, device, gamma) for dataset_id in dataset_ids]
    if not parts:
        raise DatasetError("no dataset ids given")
    first = parts[0]
    for part in parts[1:]:
        for name in ("observation_names", "action_names", "discrete"):
            if getattr(part, name) != getattr(first, name):
                raise DatasetError(f"dataset {part.dataset_id!r}: {name} differs from {first.dataset_id!r}'s")
        if part.metadata["eval_env_spec"] != first.metadata["eval_env_spec"]:
            raise DatasetError(f"dataset {part.dataset_id!r}: eval_env_spec differs from {first.dataset_id!r}'s")
    stops = np.cumsum([part.size for part in parts]).tolist()
    starts = [0, *stops[:-1]]
    return OfflineData(
        dataset_id=ID_SEPARATOR.join(part.dataset_id for part in parts),
        **{
            name: torch.cat([getattr(part, name) for part in parts])
            for name in ("observations", "actions", "rewards", "next_observations", "terminals", "returns_to_go")
        },
        observation_names=first.observation_names,
        action_names=first.action_names,
        action_low=first.action_low,
        action_high=first.action_high,
        discrete_torques=first.discrete_torques,
        metadata=first.metadata,
        member_slices=tuple(zip(starts, stops, strict=True)),
    )


def _load_one(dataset_id: str, device: torch.device, gamma: float) -> OfflineData:
    """Load one symgate Minari dataset into device memory."""
    dataset, meta = open_dataset(dataset_id)
    observations, actions, rewards, next_observations, terminals, returns = [], [], [], [], [], []
    for episode in episodes(dataset, dataset_id):
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
