"""The protocol's datasets and return normaliser.

Every dataset goes through the real pipeline, as fleet logs would: a simulated robot logs a ROS 2
bag (``symgate fleet``), the bag is ingested into a Minari dataset (``symgate ingest``), and
training reads it back from Minari. Each seed gets its own dataset, built once per work folder
and reused by later runs while its fleet and ingest configs hash the same.

Two data protocols: ``one-context`` (our reading of the paper: every trajectory in context 0, from
the env's start pose) and ``c4-poses`` (the authors' collection script: each of N random start
poses, relative to the goal bearing, in the 4 C4 rotations: 4N trajectories). Under the paper
env's swept-path success rule, which only the simulator's physics sub-steps can judge, ingestion
takes success from the episode's end marker instead of recomputing it at the control ticks.

Returns are normalised per episode by the greedy expert's return from the same start (same context,
same reset seed): our 50 Hz reacher needs ~46 control steps to reach the goal, so the raw discounted
return γ^(T-1) of even the expert is ~0.1 at γ = 0.95, and the paper reports returns normalised to
a maximum of 1.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from pipeline import REPO
from pipeline.datasets import MAIN_DATA_FILE, dataset_folder, open_dataset
from pipeline.experiment.config import DataProtocol, EnvPreset
from pipeline.fleet import FleetConfig, record_fleet
from pipeline.ingest import IngestConfig, find_bags, ingest
from pipeline.ingest.config import EndMarkerSuccess, EpisodeRules, ReachReward
from pipeline.io import atomic_write_text, load_config, sha256_json
from pipeline.train.evaluate import rollout
from sim import CONTINUOUS_ENV_ID, DISCRETE_ENV_ID
from sim.behaviour import BehaviourConfig, RecipeName, make_expert
from sim.config import ReacherConfig
from sim.contexts import ContextSets
from sim.robot import load_robot_description

#: The paper's data setting (one context) and the C4 rotations (Table 1's training contexts).
ONE_CONTEXT: tuple[float, ...] = (0.0,)
C4_CONTEXTS: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
#: The paper env preset (the authors' reacher on our arm).
PAPER_ENV = REPO / "deploy" / "env" / "reacher-paper.yaml"


def reacher_preset(name: EnvPreset) -> ReacherConfig:
    """The reacher of an env preset: ``default`` (``ReacherConfig()``) or ``paper`` (``PAPER_ENV``)."""
    return ReacherConfig() if name == "default" else load_config(PAPER_ENV, ReacherConfig)


@dataclass(frozen=True)
class DatasetSpec:
    """One seed's dataset: recipe, action type, training contexts, env preset and data protocol.

    ``trajectories`` counts trajectories (one-context) or random start poses (c4-poses, whose
    ``train_deg`` are the C4 rotations each pose is collected in).
    """

    recipe: RecipeName
    discrete: bool
    seed: int
    trajectories: int
    train_deg: tuple[float, ...]
    test_contexts: int
    env_preset: EnvPreset = "default"
    protocol: DataProtocol = "one-context"
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)

    @property
    def dataset_id(self) -> str:
        """Minari id, e.g. ``paper/discrete-c1-expert-seed3-n10-v0`` or ``paper/discrete-paperenv-c4poses-...``.

        Data of the DQN expert get ``-dqn-<hash>`` before ``-v0``.
        """
        kind = "discrete" if self.discrete else "continuous"
        env = "" if self.env_preset == "default" else f"-{self.env_preset}env"
        cover = "c4poses" if self.protocol == "c4-poses" else f"c{len(self.train_deg)}"
        expert = f"-{self.behaviour.dqn_checkpoint.name}" if self.behaviour.dqn_checkpoint else ""
        return f"paper/{kind}{env}-{cover}-{self.recipe}-seed{self.seed}-n{self.trajectories}{expert}-v0"

    def env(self) -> ReacherConfig:
        """The env the data is evaluated on (its start pose; train and held-out test sets)."""
        contexts = ContextSets(train_deg=self.train_deg, test_count=self.test_contexts)
        return reacher_preset(self.env_preset).model_copy(update={"contexts": contexts})

    def start_poses(self) -> list[tuple[float, float]]:
        """c4-poses: the seed's random start poses (shoulder minus goal bearing, elbow), degrees.

        The shoulder offset is uniform on the circle, the elbow uniform within the URDF's limits.
        """
        _, elbow = load_robot_description(self.env().urdf).joints  # the planar arm's (shoulder, elbow)
        rng = np.random.default_rng([self.seed, 4])
        shoulder = rng.uniform(-180.0, 180.0, size=self.trajectories)
        elbows = rng.uniform(np.degrees(elbow.lower), np.degrees(elbow.upper), size=self.trajectories)
        return [(float(a), float(b)) for a, b in zip(shoulder, elbows, strict=True)]

    def fleets(self) -> list[FleetConfig]:
        """The fleet sessions that collect the data: one of N episodes, or one per (pose, rotation)."""
        env = self.env()
        if self.protocol == "one-context":
            return [
                FleetConfig(
                    robots=1,
                    episodes=self.trajectories,
                    recipe=self.recipe,
                    discrete=self.discrete,
                    seed=self.seed,
                    env=env,
                    behaviour=self.behaviour,
                )
            ]
        fleets = []
        for index, (shoulder, elbow) in enumerate(self.start_poses()):
            recipe = self.recipe  # mixed: the first half of the poses expert, the rest suboptimal
            if recipe == "mixed":
                recipe = "expert" if index < (self.trajectories + 1) // 2 else "suboptimal"
            for rotation, angle in enumerate(self.train_deg):
                pose = env.model_copy(
                    update={
                        "start_shoulder_offset_deg": shoulder,
                        "start_elbow_deg": elbow,
                        "start_noise_deg": 0.0,
                        "contexts": ContextSets(train_deg=(angle,), test_count=self.test_contexts),
                    }
                )
                seed = (self.seed * self.trajectories + index) * len(self.train_deg) + rotation
                fleets.append(
                    FleetConfig(
                        robots=1,
                        episodes=1,
                        recipe=recipe,
                        discrete=self.discrete,
                        seed=seed,
                        env=pose,
                        behaviour=self.behaviour,
                    )
                )
        return fleets


def dataset_configs(spec: DatasetSpec) -> tuple[list[FleetConfig], IngestConfig]:
    """The fleet sessions that log the seed's bags and the ingest mapping that turns them into the dataset."""
    env = spec.env()
    reward = (
        EndMarkerSuccess(kind="end_marker")
        if env.success_rule == "swept_path"
        else ReachReward(radius=env.success_radius)
    )
    mapping = IngestConfig(
        control_hz=env.control_hz,
        env_id=DISCRETE_ENV_ID if spec.discrete else CONTINUOUS_ENV_ID,
        env=env,
        reward=reward,
        episodes=EpisodeRules(time_limit_steps=env.max_episode_steps),
    )
    return spec.fleets(), mapping


def dataset_sha256(spec: DatasetSpec) -> str:
    """Hash of everything that makes the dataset: its id and the exact fleet and ingest configs."""
    fleets, mapping = dataset_configs(spec)
    return sha256_json(
        {
            "dataset_id": spec.dataset_id,
            "fleets": [fleet.model_dump(mode="json") for fleet in fleets],
            "ingest": mapping.sha256(),
        }
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
    """Record the seed's fleet bags and ingest them into Minari (``MINARI_DATASETS_PATH``); returns the id.

    A dataset already built from the same configs (:func:`dataset_is_built`) is reused. Otherwise the
    stamp goes first, then the bags and the dataset are rebuilt, and the stamp (the config hash) is
    written last, atomically: an interrupted build is never taken for a finished one.
    """
    if dataset_is_built(spec, work):
        return spec.dataset_id
    stamp = _stamp(spec, work)
    stamp.unlink(missing_ok=True)
    fleets, mapping = dataset_configs(spec)
    folder = work / "fleet" / spec.dataset_id.removeprefix("paper/")
    if len(fleets) == 1:
        record_fleet(fleets[0], folder, workers=1, overwrite=True)
        bags = find_bags([folder])
    else:  # one bag per (pose, rotation), each renamed after it: ingestion keys episodes by bag name
        shutil.rmtree(folder, ignore_errors=True)
        bags = []
        for index, fleet in enumerate(fleets):
            part = folder / "sessions" / f"{index:03d}"
            record_fleet(fleet, part, workers=1, overwrite=True)
            (bag,) = find_bags([part])
            bags.append(
                bag.rename(
                    folder / f"pose{index // len(spec.train_deg):02d}-rot{fleet.env.contexts.train_deg[0]:03.0f}"
                )
            )
    ingest(bags, mapping, spec.dataset_id, workers=1, overwrite=True)
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
