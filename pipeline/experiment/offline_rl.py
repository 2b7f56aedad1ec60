"""Tables 2, 7 and 2c: pessimistic offline RL on data from one context (or C4 poses), tested on unseen rotations.

One job per (recipe, strategy): the recipe's paper preset (``deploy/train/paper-{iql,cql}-*.yaml``)
with the strategy on the actor, every seed a member of one vectorised model trained on its own
fresh dataset. The deterministic policy is then rolled out on the training context and on the
held-out rotations, and each episode's return is divided by the greedy expert's from the same start.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import REPO
from pipeline.experiment.config import ExperimentConfig, OfflineTable
from pipeline.experiment.data import C4_CONTEXTS, ONE_CONTEXT, DatasetSpec, eval_env_spec, expert_returns
from pipeline.io import load_config
from pipeline.train.config import Strategy, TrainConfig
from sim.behaviour import RecipeName


@dataclass(frozen=True)
class TrainingJob:
    """One cell of an offline-RL table: a recipe, a strategy, all seeds."""

    table: OfflineTable
    recipe: RecipeName
    strategy: Strategy
    config: TrainConfig
    datasets: tuple[DatasetSpec, ...]
    run_dir: Path

    @property
    def name(self) -> str:
        """``table-recipe-strategy``."""
        return f"{self.table}-{self.recipe}-{self.strategy}"


def algorithm_of(table: OfflineTable) -> str:
    """CQL for Table 7, IQL otherwise."""
    return "cql" if table == "7" else "iql"


def plan_training(
    table: OfflineTable, experiment: ExperimentConfig, work: Path, device: str = "auto"
) -> list[TrainingJob]:
    """Every (recipe, strategy) job of an offline-RL table, seeds vectorised.

    The paper's hyper-parameters come from the presets; the experiment config sets the number of
    updates and the target-update period (quick runs keep the number of target updates), the
    seeds, the evaluation and DAC-Latent's λ.
    """
    settings = experiment.offline_rl
    algorithm = algorithm_of(table)
    jobs = []
    for recipe in settings.recipes:
        preset = load_config(REPO / "deploy" / "train" / f"paper-{algorithm}-{recipe}.yaml", TrainConfig)
        cover = ONE_CONTEXT if settings.data_protocol == "one-context" else C4_CONTEXTS
        datasets = tuple(
            DatasetSpec(
                recipe,
                table != "2c",
                seed,
                settings.trajectories,
                cover,
                experiment.test_contexts,
                experiment.env,
                settings.data_protocol,
            )
            for seed in range(experiment.seeds)
        )
        for strategy in settings.strategies:
            data = preset.model_dump(mode="json")
            augmentation = data["augmentation"]
            augmentation["strategy"] = strategy
            augmentation["applied_to"] = "actor"
            augmentation["spec"] = str(REPO / augmentation["spec"])
            if strategy == "dac-latent":
                augmentation["consistency_weight"] = settings.latent_consistency_weight
            steps = settings.steps[table]
            data.update(
                steps=steps,
                target_update_every=max(1, steps // settings.target_updates),
                gamma=experiment.gamma,
                seeds=experiment.seeds,
                seed=0,
                device=device,
                log_every=max(1, steps // 10),
                checkpoint_every=steps,
                evaluation={
                    "every": 0,
                    "episodes": experiment.test_contexts,
                    "train_episodes": experiment.train_episodes,
                },
            )
            config = TrainConfig.model_validate(data)
            jobs.append(
                TrainingJob(table, recipe, strategy, config, datasets, work / "runs" / table / recipe / strategy)
            )
    return jobs


def run_training(job: TrainingJob) -> dict[str, Any]:
    """Train one job's members and evaluate them; returns per-seed normalised returns and diagnostics."""
    from pipeline.train import train  # torch: only in the worker that trains

    started = time.perf_counter()
    shutil.rmtree(job.run_dir, ignore_errors=True)  # datasets are rebuilt each run: never resume an old one
    summary = train(job.config, [spec.dataset_id for spec in job.datasets], job.run_dir)
    result: dict[str, Any] = {
        "job": job.name,
        "device": summary["device"],
        "row": job.recipe,
        "column": job.strategy,
        "equivariance_error": summary["equivariance_error"],
        "q_invariance_error": summary.get("q_invariance_error"),
        "pessimism": summary.get("pessimism"),
    }
    spec = eval_env_spec(job.datasets[0].dataset_id)
    for name, evaluation in summary["evaluation"].items():
        angles = np.radians(np.asarray(evaluation["context_deg"]))
        normaliser = expert_returns(spec, angles, job.config.seed, job.config.gamma)
        returns = np.asarray(evaluation["episodes"]["discounted_return"]) / normaliser
        result[name] = {
            "normalised_return": returns.mean(axis=1).tolist(),
            "success": evaluation["success"],
        }
    result["wall_s"] = time.perf_counter() - started
    return result
