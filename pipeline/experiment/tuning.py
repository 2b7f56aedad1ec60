"""``symgate experiment tune-lambda``: the paper's tuning protocol for the consistency weight λ.

The baselines come first and stay frozen: every hyper-parameter of the paper presets
(``deploy/train/paper-{iql,cql}-*.yaml``: learning rates, batch, expectile, temperature, α) is the
paper's tuned value and is not touched here. Only DAC-Output's λ
(``augmentation.consistency_weight``) is searched, over ``offline_rl.lambda_grid`` (the paper's
{1, 10, 100}), per recipe, with everything else as in the table's DAC-Output job. Each candidate is
scored by its mean normalised return over seeds on the **validation** contexts (``ContextSets``
``validation``, drawn independently of the test set); the test contexts are never rolled out. The
best λ (the smaller one on a tie) is written into the recipe's preset, atomically, and every
candidate's numbers into ``results/<mode>/lambda-table<N>.json``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.experiment.config import ExperimentConfig, OfflineTable
from pipeline.experiment.offline_rl import PRESETS, TrainingJob, datasets_of, job_config, preset_path
from pipeline.experiment.report import Cell
from pipeline.io import ConfigError, atomic_write_json, atomic_write_text, load_config
from pipeline.train.config import Strategy, TrainConfig
from sim.behaviour import BehaviourConfig, RecipeName

#: The tables whose presets hold a tunable DAC-Output λ (2c shares Table 2's IQL presets).
TUNABLE: tuple[OfflineTable, ...] = ("2", "7")
#: The strategy whose λ is tuned (DAC-Latent keeps the paper's λ = 100, ``latent_consistency_weight``).
TUNED_STRATEGY: Strategy = "dac-output"
_WEIGHT = re.compile(r"(consistency_weight:\s*)([^,}\s#]+)")
_NOTE = "# tune-lambda:"


def lambda_label(weight: float) -> str:
    """``lambda10`` for λ = 10."""
    return f"lambda{weight:g}"


def plan_tuning(
    table: OfflineTable,
    experiment: ExperimentConfig,
    work: Path,
    device: str = "auto",
    presets: Path = PRESETS,
    behaviour: BehaviourConfig | None = None,
) -> list[TrainingJob]:
    """One DAC-Output job per (recipe, λ), evaluated on the validation contexts instead of the test ones.

    Raises:
        ConfigError: A table without a tunable preset λ.
    """
    if table not in TUNABLE:
        raise ConfigError(f"--table {table}: λ is tuned for tables {', '.join(TUNABLE)} (their presets hold it)")
    jobs = []
    for recipe in experiment.offline_rl.recipes:
        preset = load_config(preset_path(table, recipe, presets), TrainConfig)
        datasets = datasets_of(table, recipe, experiment, behaviour)
        for weight in experiment.offline_rl.lambda_grid:
            config = job_config(
                preset, table, TUNED_STRATEGY, experiment, device, consistency_weight=weight, held_out="validation"
            )
            label = lambda_label(weight)
            run_dir = work / "tune" / table / recipe / f"{TUNED_STRATEGY}-{label}"
            jobs.append(TrainingJob(table, recipe, TUNED_STRATEGY, config, datasets, run_dir, label))
    return jobs


def choose(jobs: Sequence[TrainingJob], results: Sequence[dict[str, Any]]) -> dict[RecipeName, dict[str, Any]]:
    """Per recipe: each λ's validation (and train) return over seeds, and the chosen λ.

    The chosen λ has the highest mean normalised validation return; ties go to the smaller λ.
    """
    by_recipe: dict[RecipeName, dict[str, Any]] = {}
    for job, result in zip(jobs, results, strict=True):
        weight = job.config.augmentation.consistency_weight
        entry = by_recipe.setdefault(job.recipe, {"candidates": {}})
        entry["candidates"][f"{weight:g}"] = {
            "lambda": weight,
            "validation_return": Cell.of(result["validation"]["normalised_return"]).model_dump(),
            "validation_success": Cell.of(result["validation"]["success"]).model_dump(),
            "train_return": Cell.of(result["train"]["normalised_return"]).model_dump(),
            "job": job.name,
        }
    for entry in by_recipe.values():
        candidates = sorted(entry["candidates"].values(), key=lambda c: c["lambda"])
        means = [c["validation_return"]["mean"] for c in candidates]
        entry["chosen"] = candidates[int(np.argmax(means))]["lambda"]  # argmax: the first (smallest λ) on a tie
    return by_recipe


def write_lambda(path: Path, weight: float, note: str) -> None:
    """Set ``augmentation.consistency_weight`` in a preset YAML to ``weight``, keeping its comments.

    One ``consistency_weight:`` in the file is replaced in place and a ``# tune-lambda:`` comment
    line (``note``) goes above the ``augmentation:`` line (replacing an older one); the new text
    must validate to the same config but for λ before it atomically replaces the file.

    Raises:
        ConfigError: The preset has not exactly one ``consistency_weight``, or the edit changed more than λ.
    """
    before = load_config(path, TrainConfig)
    text = path.read_text(encoding="utf-8")
    if len(_WEIGHT.findall(text)) != 1:
        raise ConfigError(f"{path}: expected exactly one augmentation consistency_weight to set λ in")
    text = _WEIGHT.sub(lambda match: f"{match.group(1)}{weight:g}", text)
    lines = [line for line in text.splitlines() if not line.startswith(_NOTE)]
    at = next((i for i, line in enumerate(lines) if line.startswith("augmentation:")), None)
    if at is None:
        raise ConfigError(f"{path}: no top-level augmentation: line to note the tuned λ above")
    lines.insert(at, f"{_NOTE} {note}")
    text = "\n".join(lines) + "\n"
    after = TrainConfig.model_validate(yaml.safe_load(text))
    expected = before.model_copy(
        update={"augmentation": before.augmentation.model_copy(update={"consistency_weight": weight})}
    )
    if after != expected:
        raise ConfigError(f"{path}: setting λ = {weight:g} would change more than augmentation.consistency_weight")
    atomic_write_text(path, text)


def finish_tuning(
    table: OfflineTable,
    mode: str,
    jobs: Sequence[TrainingJob],
    results: Sequence[dict[str, Any]],
    experiment: ExperimentConfig,
    out: Path,
    *,
    presets: Path = PRESETS,
    write: bool = True,
) -> Path:
    """Choose λ per recipe, write it into the presets (unless ``write`` is false) and the JSON record.

    Returns:
        The record, ``out/lambda-table<N>.json``.
    """
    chosen = choose(jobs, results)
    record_path = out / f"lambda-table{table}.json"
    n = experiment.test_contexts
    for recipe, entry in chosen.items():
        preset = preset_path(table, recipe, presets)
        entry["preset"] = str(preset)
        entry["written"] = write
        if write:
            scores = ", ".join(
                f"{c['lambda']:g}: {c['validation_return']['mean']:.2f}" for c in entry["candidates"].values()
            )
            note = (
                f"λ = {entry['chosen']:g} chosen on {n} validation contexts, env: {experiment.env}, "
                f"{experiment.seeds} seeds, {experiment.offline_rl.steps_of(table)} updates "
                f"(validation return {scores}); "
                f"{record_path.name} ({mode})"
            )
            write_lambda(preset, entry["chosen"], note)
    record = {
        "table": table,
        "mode": mode,
        "strategy": TUNED_STRATEGY,
        "grid": list(experiment.offline_rl.lambda_grid),
        "contexts": "validation",
        "validation_contexts": n,
        "recipes": chosen,
        "experiment": experiment.model_dump(mode="json"),
        "jobs": {job.name: job.config.model_dump(mode="json") for job in jobs},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(record_path, record)
    return record_path
