"""The protocol's datasets and return normaliser.

Every dataset goes through the real pipeline, as fleet logs would: a simulated robot logs a ROS 2
bag (``symgate fleet``), the bag is ingested into a Minari dataset (``symgate ingest``), and
training reads it back from Minari. Each seed gets its own dataset, built once per work folder
and reused by later runs while its fleet and ingest configs hash the same.

Returns are normalised per episode by the greedy expert's return from the same start (same context,
same reset seed): our 50 Hz reacher needs ~46 control steps to reach the goal, so the raw discounted
return γ^(T-1) of even the expert is ~0.1 at γ = 0.95, and the paper reports returns normalised to
a maximum of 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from pipeline.datasets import MAIN_DATA_FILE, dataset_folder, open_dataset
from pipeline.fleet import FleetConfig, record_fleet
from pipeline.ingest import IngestConfig, find_bags, ingest
from pipeline.io import atomic_write_text, sha256_json
from pipeline.train.evaluate import rollout
from sim import CONTINUOUS_ENV_ID, DISCRETE_ENV_ID
from sim.behaviour import RecipeName, make_expert
from sim.config import ReacherConfig
from sim.contexts import ContextSets

#: The paper's data setting (one context) and the C4 rotations (Table 1's training contexts).
ONE_CONTEXT: tuple[float, ...] = (0.0,)
C4_CONTEXTS: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)


@dataclass(frozen=True)
class DatasetSpec:
    """One seed's dataset: recipe, action type, training contexts."""

    recipe: RecipeName
    discrete: bool
    seed: int
    trajectories: int
    train_deg: tuple[float, ...]
    test_contexts: int

    @property
    def dataset_id(self) -> str:
        """Minari id, e.g. ``paper/discrete-c1-expert-seed3-v0``."""
        kind = "discrete" if self.discrete else "continuous"
        return f"paper/{kind}-c{len(self.train_deg)}-{self.recipe}-seed{self.seed}-n{self.trajectories}-v0"

    def env(self) -> ReacherConfig:
        """The env the data is collected in and evaluated on (train and held-out test sets)."""
        return ReacherConfig(contexts=ContextSets(train_deg=self.train_deg, test_count=self.test_contexts))


def dataset_configs(spec: DatasetSpec) -> tuple[FleetConfig, IngestConfig]:
    """The fleet that logs the seed's bag and the ingest mapping that turns it into the dataset."""
    env = spec.env()
    fleet = FleetConfig(
        robots=1, episodes=spec.trajectories, recipe=spec.recipe, discrete=spec.discrete, seed=spec.seed, env=env
    )
    return fleet, IngestConfig(env_id=DISCRETE_ENV_ID if spec.discrete else CONTINUOUS_ENV_ID, env=env)


def dataset_sha256(spec: DatasetSpec) -> str:
    """Hash of everything that makes the dataset: its id and the exact fleet and ingest configs."""
    fleet, mapping = dataset_configs(spec)
    return sha256_json(
        {"dataset_id": spec.dataset_id, "fleet": fleet.model_dump(mode="json"), "ingest": mapping.sha256()}
    )


def _stamp(spec: DatasetSpec, work: Path) -> Path:
    return work / "fleet" / f"{spec.dataset_id.removeprefix('paper/')}.sha256"


def dataset_is_built(spec: DatasetSpec, work: Path) -> bool:
    """Whether ``work`` holds this exact dataset: its stamp names the same config hash and Minari has it."""
    stamp = _stamp(spec, work)
    try:
        built = stamp.read_text(encoding="utf-8").strip() == dataset_sha256(spec)
    except OSError:
        return False
    return built and (dataset_folder(spec.dataset_id) / "data" / MAIN_DATA_FILE).is_file()


def build_dataset(spec: DatasetSpec, work: Path) -> str:
    """Record the seed's fleet bag and ingest it into Minari (``MINARI_DATASETS_PATH``); returns the id.

    A dataset already built from the same configs (:func:`dataset_is_built`) is reused. Otherwise the
    stamp goes first, then the bag and the dataset are rebuilt, and the stamp (the config hash) is
    written last, atomically: an interrupted build is never taken for a finished one.
    """
    if dataset_is_built(spec, work):
        return spec.dataset_id
    stamp = _stamp(spec, work)
    stamp.unlink(missing_ok=True)
    fleet, mapping = dataset_configs(spec)
    folder = work / "fleet" / spec.dataset_id.removeprefix("paper/")
    record_fleet(fleet, folder, workers=1, overwrite=True)
    ingest(find_bags([folder]), mapping, spec.dataset_id, workers=1, overwrite=True)
    atomic_write_text(stamp, dataset_sha256(spec) + "\n")
    return spec.dataset_id


def eval_env_spec(dataset_id: str) -> dict[str, Any]:
    """The env a dataset names for evaluation (``eval_env_spec`` in its Minari metadata)."""
    dataset, _ = open_dataset(dataset_id)
    spec: dict[str, Any] = json.loads(dataset.storage.metadata["eval_env_spec"])
    return spec


def expert_returns(
    env_spec: dict[str, Any], angles: NDArray[np.float64], seed: int, gamma: float
) -> NDArray[np.float64]:
    """The greedy expert's discounted return per episode (episode j: context ``angles[j]``, seed ``seed + j``).

    Raises:
        RuntimeError: The expert failed an episode, so that episode's normaliser is undefined.
    """
    env = gym.make(env_spec["id"], **env_spec.get("kwargs", {}))
    expert = make_expert(env.unwrapped)  # type: ignore[arg-type]
    env.close()
    rng = np.random.default_rng(0)  # unused by the greedy expert

    def policy(observations: Tensor) -> Tensor:
        flat = observations.reshape(-1, observations.shape[-1]).numpy()
        actions = np.stack([np.asarray(expert(o, rng)) for o in flat])
        return torch.as_tensor(actions).reshape(*observations.shape[:-1], *actions.shape[1:])

    outcome = rollout(policy, env_spec, angles, 1, gamma, seed, torch.device("cpu"))
    failed = np.flatnonzero(outcome["success"][0] == 0)
    if failed.size:
        raise RuntimeError(f"the expert failed in contexts {np.degrees(angles[failed]).round(1).tolist()} deg")
    returns: NDArray[np.float64] = outcome["discounted_return"][0]
    return returns
