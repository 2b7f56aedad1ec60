"""Reruns resume: finished jobs and built datasets are reused by hash, changed ones recompute, a budget stops cleanly.

Real datasets, training and rollouts at CI size (one recipe, two strategies, two seeds).
"""

import time
from pathlib import Path

import pytest

from pipeline.experiment import ExperimentConfig, Runner
from pipeline.experiment.offline_rl import plan_training
from pipeline.experiment.report import TableReport
from pipeline.experiment.runner import TimeBudgetError
from tests.pipeline.experiment.test_harness import TINY

SMALL = TINY.model_copy(
    update={
        "offline_rl": TINY.offline_rl.model_copy(
            update={
                "recipes": ("expert",),
                "strategies": ("none", "dac-latent"),
                "steps": {"2": 60, "7": 60, "2c": 60},
                "target_updates": 6,
            }
        )
    }
)


def table(runner: Runner) -> TableReport:
    return TableReport.model_validate_json((runner.run("2").parent / "table2.json").read_text(encoding="utf-8"))


def runner(tmp_path: Path, experiment: ExperimentConfig = SMALL, stop_after: float | None = None) -> Runner:
    return Runner(experiment, mode="quick", work=tmp_path / "work", results=tmp_path / "results", workers=1,
                  device="cpu", stop_after=stop_after)  # fmt: skip


def snapshot(work: Path) -> dict[str, int]:
    """Every file under the work folder (bags, stamps, datasets, runs, results) and its modification time."""
    return {str(path.relative_to(work)): path.stat().st_mtime_ns for path in work.rglob("*") if path.is_file()}


@pytest.mark.slow  # four real trainings: minutes on a shared 2-core machine
def test_a_rerun_trains_nothing_and_a_change_retrains_only_what_it_affects(tmp_path: Path) -> None:
    first = runner(tmp_path)
    started = time.perf_counter()
    report = table(first)
    first_s = time.perf_counter() - started
    assert first.trained == ["2-expert-none", "2-expert-dac-latent"] and first.reused == []
    files = snapshot(tmp_path / "work")

    second = runner(tmp_path)
    started = time.perf_counter()
    again = table(second)
    second_s = time.perf_counter() - started
    print(f"first run {first_s:.1f} s, rerun {second_s:.1f} s")  # measured, not asserted (shared machine)
    assert second.trained == [] and second.reused == ["2-expert-none", "2-expert-dac-latent"]
    assert snapshot(tmp_path / "work") == files  # no dataset rebuilt, no run folder touched
    assert again.test_return == report.test_return and again.protocol["reused_jobs"] == second.reused

    latent = SMALL.model_copy(
        update={"offline_rl": SMALL.offline_rl.model_copy(update={"latent_consistency_weight": 1.0})}
    )
    third = runner(tmp_path, latent)
    changed = table(third)
    assert third.trained == ["2-expert-dac-latent"] and third.reused == ["2-expert-none"]
    assert changed.test_return["expert"]["none"] == report.test_return["expert"]["none"]
    assert changed.protocol["jobs"]["2-expert-dac-latent"]["augmentation"]["consistency_weight"] == 1.0

    (none,) = [job for job in plan_training("2", latent, tmp_path / "work") if job.strategy == "none"]
    text = none.result_path.read_text(encoding="utf-8")
    none.result_path.write_text(text[: len(text) // 3], encoding="utf-8")  # a result cut short
    fourth = runner(tmp_path, latent)
    table(fourth)
    assert fourth.trained == ["2-expert-none"] and fourth.reused == ["2-expert-dac-latent"]


def test_a_spent_time_budget_starts_nothing_and_keeps_what_is_done(tmp_path: Path) -> None:
    with pytest.raises(TimeBudgetError, match="2 dataset build"):
        runner(tmp_path, stop_after=0.0).run("2")
    assert not (tmp_path / "results").exists()  # no table from a part of its jobs
    assert not list((tmp_path / "work").rglob("*.result.json"))
