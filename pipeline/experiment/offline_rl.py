"""Tables 2, 7, 2c and 8: pessimistic offline RL on data from one context (or C4 poses), tested on unseen rotations.

One job per (recipe, strategy): the recipe's paper preset (``deploy/train/paper-{iql,cql}-*.yaml``)
with the strategy on the actor (Table 8: on the critic only), every seed a member of one vectorised
model trained on its own dataset. The deterministic policy is then rolled out on the training
context and on the held-out rotations (``tune-lambda``: the validation rotations), and each
episode's return is divided by the greedy expert's from the same start.

Jobs resume: a finished job's result is written atomically beside its run folder with the job's
hash (:meth:`TrainingJob.sha256`: the exact training config, the symmetry spec's bytes and every
dataset's config hash). A rerun reuses a result whose hash matches and retrains a job whose hash
does not, so results of different configs never mix. Code changes are not part of the hash: after
one, start a new work folder.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import REPO
from pipeline.experiment.config import ExperimentConfig, OfflineTable
from pipeline.experiment.data import (
    C4_CONTEXTS,
    ONE_CONTEXT,
    DatasetSpec,
    dataset_sha256,
    eval_env_spec,
    expert_returns,
)
from pipeline.io import atomic_write_json, load_config, sha256_file, sha256_json
from pipeline.train.config import AppliedTo, Strategy, TrainConfig
from sim.behaviour import BehaviourConfig, RecipeName
from sim.contexts import ContextSetName

#: Where the paper presets live (``tune-lambda`` can write to a copy elsewhere).
PRESETS = REPO / "deploy" / "train"
#: Bumped when a job's result changes meaning, so older results are recomputed.
RESULT_FORMAT = 1


@dataclass(frozen=True)
class TrainingJob:
    """One cell of an offline-RL table: a recipe, a strategy, all seeds."""

    table: OfflineTable
    recipe: RecipeName
    strategy: Strategy
    config: TrainConfig
    datasets: tuple[DatasetSpec, ...]
    run_dir: Path
    label: str = ""

    @property
    def name(self) -> str:
        """``table-recipe-strategy``, then the label (``lambda10`` for a tuning job) if any."""
        return "-".join(part for part in (self.table, self.recipe, self.strategy, self.label) if part)

    @property
    def result_path(self) -> Path:
        """The job's result, beside its run folder (which is replaced when the job retrains)."""
        return self.run_dir.with_name(f"{self.run_dir.name}.result.json")

    def sha256(self) -> str:
        """Hash of what the job's numbers depend on: its training config, symmetry spec and datasets."""
        config = self.config.model_dump(mode="json")
        config["augmentation"]["spec"] = sha256_file(Path(config["augmentation"]["spec"]))
        datasets = [dataset_sha256(spec) for spec in self.datasets]
        return sha256_json({"format": RESULT_FORMAT, "config": config, "datasets": datasets})


def algorithm_of(table: OfflineTable) -> str:
    """CQL for Table 7, IQL otherwise."""
    return "cql" if table == "7" else "iql"


def preset_path(table: OfflineTable, recipe: RecipeName, presets: Path = PRESETS) -> Path:
    """The paper preset of a table's recipe: ``paper-{iql,cql}-{recipe}.yaml``."""
    return presets / f"paper-{algorithm_of(table)}-{recipe}.yaml"


def datasets_of(
    table: OfflineTable, recipe: RecipeName, experiment: ExperimentConfig, behaviour: BehaviourConfig | None = None
) -> tuple[DatasetSpec, ...]:
    """One dataset per seed: the recipe's trajectories by the data protocol (continuous torques for 2c).

    ``behaviour`` is the datasets' expert (default: analytic); 2c keeps the analytic one (the DQN is discrete).
    """
    settings = experiment.offline_rl
    cover = ONE_CONTEXT if settings.data_protocol == "one-context" else C4_CONTEXTS
    return tuple(
        DatasetSpec(
            recipe,
            table != "2c",
            seed,
            settings.trajectories,
            cover,
            experiment.test_contexts,
            experiment.env,
            settings.data_protocol,
            (behaviour or BehaviourConfig()) if table != "2c" else BehaviourConfig(),
        )
        for seed in range(experiment.seeds)
    )


def job_config(
    preset: TrainConfig,
    table: OfflineTable,
    strategy: Strategy,
    experiment: ExperimentConfig,
    device: str,
    *,
    applied_to: AppliedTo = "actor",
    consistency_weight: float | None = None,
    held_out: ContextSetName = "test",
) -> TrainConfig:
    """A preset with the experiment's strategy, updates, seeds and evaluation; nothing else changes.

    The paper's hyper-parameters come from the preset; the experiment config sets the number of
    updates and the target-update period (quick runs keep the number of target updates), the
    seeds, the evaluation, DAC-Latent's λ, and ``consistency_weight`` when given (λ tuning).
    """
    settings = experiment.offline_rl
    data = preset.model_dump(mode="json")
    augmentation = data["augmentation"]
    augmentation["strategy"] = strategy
    augmentation["applied_to"] = applied_to
    augmentation["spec"] = str(REPO / augmentation["spec"])
    if strategy == "dac-latent":
        augmentation["consistency_weight"] = settings.latent_consistency_weight
    if consistency_weight is not None:
        augmentation["consistency_weight"] = consistency_weight
    steps = settings.steps_of(table)
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
            "held_out": held_out,
        },
    )
    return TrainConfig.model_validate(data)


def plan_training(
    table: OfflineTable,
    experiment: ExperimentConfig,
    work: Path,
    device: str = "auto",
    presets: Path = PRESETS,
    behaviour: BehaviourConfig | None = None,
) -> list[TrainingJob]:
    """Every (recipe, strategy) job of an offline-RL table, seeds vectorised.

    Tables 2, 7 and 2c apply ``strategies`` to the actor; Table 8 applies ``critic_strategies`` to
    the critic only, with Table 2's IQL presets. ``behaviour`` is the datasets' expert (default: analytic).
    """
    settings = experiment.offline_rl
    critic_only = table == "8"
    strategies = settings.critic_strategies if critic_only else settings.strategies
    jobs = []
    for recipe in settings.recipes:
        preset = load_config(preset_path(table, recipe, presets), TrainConfig)
        datasets = datasets_of(table, recipe, experiment, behaviour)
        for strategy in strategies:
            config = job_config(
                preset, table, strategy, experiment, device, applied_to="critic" if critic_only else "actor"
            )
            run_dir = work / "runs" / table / recipe / strategy
            jobs.append(TrainingJob(table, recipe, strategy, config, datasets, run_dir))
    return jobs


def cached_result(job: TrainingJob) -> dict[str, Any] | None:
    """The job's saved result if it was computed with exactly this job's hash, else ``None``.

    A missing, unreadable or truncated file, or one from another config, is not a result.
    """
    try:
        saved = json.loads(job.result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("job_sha256") != job.sha256() or "result" not in saved:
        return None
    result: dict[str, Any] = saved["result"]
    return result


def run_training(job: TrainingJob) -> dict[str, Any]:
    """Train one job's members from scratch, evaluate them and save the result (atomically, with its hash).

    Returns:
        Per-seed normalised returns and success per evaluated context set, and diagnostics.
    """
    from pipeline.train import train  # torch: only in the worker that trains

    started = time.perf_counter()
    job_sha256 = job.sha256()
    shutil.rmtree(job.run_dir, ignore_errors=True)  # no result of this hash exists: nothing here to keep
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
    atomic_write_json(job.result_path, {"job": job.name, "job_sha256": job_sha256, "result": result})
    return result
