"""Planning of the offline-RL tables (Table 8's critic-only ablation) and the job hashes that make reruns resume."""

import json
from pathlib import Path

import pytest

from pipeline.experiment import ExperimentConfig
from pipeline.experiment.offline_rl import cached_result, plan_training
from pipeline.io import atomic_write_json
from tests.pipeline.experiment.test_harness import TINY


def test_table_8_puts_every_strategy_on_the_critic_only(tmp_path: Path) -> None:
    table2 = {job.name: job for job in plan_training("2", TINY, tmp_path)}
    jobs = plan_training("8", TINY, tmp_path)
    strategies = TINY.offline_rl.critic_strategies
    assert [(job.recipe, job.strategy) for job in jobs] == [(r, s) for r in TINY.offline_rl.recipes for s in strategies]
    for job in jobs:
        assert job.config.algorithm == "iql" and job.config.augmentation.applied_to == "critic"
        assert job.config.steps == TINY.offline_rl.steps["2"]  # Table 8 defaults to Table 2's updates
        assert all(spec.discrete for spec in job.datasets)
    none = next(job for job in jobs if job.strategy == "none" and job.recipe == "expert")
    baseline = table2["2-expert-none"]
    # Table 8 is Table 2 with the symmetry moved to the critic: same data, same hyper-parameters.
    assert none.datasets == baseline.datasets
    assert none.config.model_copy(update={"augmentation": baseline.config.augmentation}) == baseline.config
    assert len({job.run_dir for job in jobs} | {job.run_dir for job in table2.values()}) == len(jobs) + len(table2)


def test_table_8_steps_can_be_set() -> None:
    offline = TINY.offline_rl.model_copy(update={"steps": {**TINY.offline_rl.steps, "8": 50}})
    assert offline.steps_of("8") == 50 and offline.steps_of("2") == 200
    with pytest.raises(ValueError, match="missing"):
        ExperimentConfig.model_validate({"offline_rl": {"steps": {"2": 1, "8": 1}}})


def test_a_changed_field_changes_only_the_hashes_of_the_jobs_it_affects(tmp_path: Path) -> None:
    offline = TINY.offline_rl.model_copy(update={"strategies": ("none", "dac-latent")})
    before = {
        job.name: job.sha256() for job in plan_training("2", TINY.model_copy(update={"offline_rl": offline}), tmp_path)
    }
    again = {
        job.name: job.sha256() for job in plan_training("2", TINY.model_copy(update={"offline_rl": offline}), tmp_path)
    }
    assert again == before
    latent = offline.model_copy(update={"latent_consistency_weight": 3.0})
    after = {
        job.name: job.sha256() for job in plan_training("2", TINY.model_copy(update={"offline_rl": latent}), tmp_path)
    }
    assert sorted(name for name in before if after[name] != before[name]) == [
        "2-expert-dac-latent",
        "2-mixed-dac-latent",
    ]
    fewer = {
        job.name: job.sha256()
        for job in plan_training("2", TINY.model_copy(update={"offline_rl": offline, "train_episodes": 1}), tmp_path)
    }
    assert all(fewer[name] != before[name] for name in before)  # the evaluation is part of every job


def test_only_a_complete_result_of_the_same_hash_is_reused(tmp_path: Path) -> None:
    job = plan_training("2", TINY, tmp_path)[0]
    assert cached_result(job) is None  # nothing there
    result = {"row": "expert", "column": "none", "test": {"normalised_return": [0.5, 0.5]}}
    text = json.dumps({"job": job.name, "job_sha256": job.sha256(), "result": result})
    job.result_path.parent.mkdir(parents=True)
    job.result_path.write_text(text[: len(text) // 2])  # half-written (a copy cut short, a full disk)
    assert cached_result(job) is None
    job.result_path.with_name(f".{job.result_path.name}.tmp").write_text(text)  # a temp file left by a kill
    assert cached_result(job) is None
    atomic_write_json(job.result_path, {"job": job.name, "job_sha256": "0" * 64, "result": result})
    assert cached_result(job) is None  # another config's result
    atomic_write_json(job.result_path, {"job": job.name, "job_sha256": job.sha256(), "result": result})
    assert cached_result(job) == result
