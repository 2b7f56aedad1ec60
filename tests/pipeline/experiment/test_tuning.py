"""λ tuning: the paper's protocol at the plan level (validation contexts, frozen baselines) and one tiny real run."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.experiment.offline_rl import PRESETS, plan_training
from pipeline.experiment.tuning import choose, plan_tuning, write_lambda
from pipeline.io import ConfigError, load_config
from pipeline.train.config import TrainConfig
from sim.contexts import ContextSets
from tests.pipeline.experiment.test_harness import TINY


@pytest.mark.parametrize("table", ["2", "7"])
def test_tuning_varies_only_lambda_and_scores_on_validation_contexts(table: str, tmp_path: Path) -> None:
    jobs = plan_tuning(table, TINY, tmp_path)  # type: ignore[arg-type]
    grid = TINY.offline_rl.lambda_grid
    assert [(job.recipe, job.config.augmentation.consistency_weight) for job in jobs] == [
        (recipe, weight) for recipe in TINY.offline_rl.recipes for weight in grid
    ]
    planned = {job.name: job for job in plan_training(table, TINY, tmp_path)}  # type: ignore[arg-type]
    for job in jobs:
        assert job.config.evaluation.held_out == "validation"  # the test contexts are never rolled out
        dac = planned[f"{table}-{job.recipe}-dac-output"].config
        baseline = planned[f"{table}-{job.recipe}-none"].config
        # Everything but λ and the held-out set is the table's own DAC-Output job; the baseline's
        # hyper-parameters (everything outside `augmentation`) are frozen.
        assert job.config.model_copy(update={"augmentation": dac.augmentation, "evaluation": dac.evaluation}) == dac
        assert (
            job.config.model_copy(update={"augmentation": baseline.augmentation, "evaluation": baseline.evaluation})
            == baseline
        )
        assert job.datasets == planned[f"{table}-{job.recipe}-dac-output"].datasets
        assert (
            job.run_dir.is_relative_to(tmp_path / "tune")
            and job.result_path != planned[f"{table}-{job.recipe}-dac-output"].result_path
        )


def test_validation_and_test_contexts_are_disjoint_draws() -> None:
    contexts = ContextSets(train_deg=(0.0,))
    validation, test = contexts.angles("validation"), contexts.angles("test")
    assert len(validation) == 100 and not np.isin(validation, test).any()


def test_only_tables_with_a_preset_lambda_are_tuned(tmp_path: Path) -> None:
    for table in ("2c", "8"):
        with pytest.raises(ConfigError, match="tuned for tables 2, 7"):
            plan_tuning(table, TINY, tmp_path)


def test_the_best_validation_return_wins_and_a_tie_goes_to_the_smaller_lambda(tmp_path: Path) -> None:
    jobs = [job for job in plan_tuning("2", TINY, tmp_path) if job.recipe == "expert"]

    def result(validation: float) -> dict[str, dict[str, list[float]]]:
        return {
            name: {"normalised_return": [validation, validation], "success": [1.0, 1.0]}
            for name in ("validation", "train")
        }

    assert choose(jobs, [result(v) for v in (0.2, 0.7, 0.5)])["expert"]["chosen"] == 10.0
    assert choose(jobs, [result(v) for v in (0.2, 0.7, 0.7)])["expert"]["chosen"] == 10.0
    assert choose(jobs, [result(v) for v in (0.9, 0.7, 0.9)])["expert"]["chosen"] == 1.0


def test_writing_lambda_changes_that_value_only_and_keeps_the_comments(tmp_path: Path) -> None:
    path = tmp_path / "paper-cql-mixed.yaml"
    shutil.copy(PRESETS / path.name, path)
    before, text = load_config(path, TrainConfig), path.read_text(encoding="utf-8")
    write_lambda(path, 1.0, "first")
    write_lambda(path, 10.0, "second")
    after = load_config(path, TrainConfig)
    assert after.augmentation.consistency_weight == 10.0
    assert after.model_copy(update={"augmentation": before.augmentation}) == before
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [line for line in lines if line.startswith("# tune-lambda:")] == ["# tune-lambda: second"]

    def other_comments(lines: list[str]) -> list[str]:
        return [line for line in lines if line.startswith("#") and not line.startswith("# tune-lambda:")]

    assert other_comments(lines) == other_comments(text.splitlines())
    path.write_text(text + "# consistency_weight: 3 (a second one)\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="exactly one"):
        write_lambda(path, 1.0, "refused")
    assert path.read_text(encoding="utf-8").endswith("(a second one)\n")  # untouched


@pytest.mark.slow  # two real trainings and rollouts through the CLI: minutes on a shared 2-core machine
def test_tune_lambda_command_end_to_end(tmp_path: Path) -> None:
    """A tiny real run: 2 λ on one recipe, 2 seeds; the record, and the chosen λ in a copy of the presets."""
    presets = tmp_path / "presets"
    shutil.copytree(PRESETS, presets)
    offline = TINY.offline_rl.model_copy(
        update={"recipes": ("expert",), "lambda_grid": (1.0, 100.0), "steps": {"2": 60, "7": 60, "2c": 60}}
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY.model_copy(update={"offline_rl": offline}).model_dump(mode="json")))
    args = ["experiment", "tune-lambda", "--table", "2", "--config", str(config), "--presets", str(presets),
            "--out", str(tmp_path / "work"), "--results", str(tmp_path / "results"),
            "--workers", "1", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "results" / "full" / "lambda-table2.json").read_text(encoding="utf-8"))
    entry = record["recipes"]["expert"]
    assert record["contexts"] == "validation" and set(entry["candidates"]) == {"1", "100"}
    means = {c["lambda"]: c["validation_return"]["mean"] for c in entry["candidates"].values()}
    assert entry["chosen"] == max(means, key=lambda weight: (means[weight], -weight))
    assert (
        load_config(presets / "paper-iql-expert.yaml", TrainConfig).augmentation.consistency_weight == entry["chosen"]
    )
    assert load_config(presets / "paper-iql-mixed.yaml", TrainConfig) == load_config(
        PRESETS / "paper-iql-mixed.yaml", TrainConfig
    )
    saved = [
        json.loads(p.read_text(encoding="utf-8"))["result"] for p in (tmp_path / "work" / "tune").rglob("*.result.json")
    ]
    assert len(saved) == 2 and all(set(r) >= {"train", "validation"} and "test" not in r for r in saved)
    assert f"expert: λ = {entry['chosen']:g}" in result.output
