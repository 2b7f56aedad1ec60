"""The experiment harness end to end at CI size: real fleets, bags, Minari datasets, training, PyBullet."""

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.experiment import ExperimentConfig, Runner
from pipeline.experiment.data import ONE_CONTEXT, DatasetSpec, build_dataset, eval_env_spec, expert_returns
from pipeline.experiment.report import TableReport
from pipeline.io import load_config

REPO = Path(__file__).resolve().parents[3]
TINY = ExperimentConfig.model_validate(
    {
        "seeds": 2,
        "distillation_seeds": 2,
        "test_contexts": 3,
        "train_episodes": 2,
        "offline_rl": {
            "recipes": ["expert", "mixed"],
            "strategies": ["none", "dac-output"],
            "trajectories": 2,
            "steps": {"2": 200, "7": 100, "2c": 200},
            "target_updates": 20,
        },
        "distillation": {"trajectories": 1, "steps": 100, "hidden": [64, 64], "etas": [0.1, 10.0]},
    }
)


def check(report: TableReport, rows: list[str], columns: list[str], seeds: int) -> None:
    assert report.rows == rows and report.columns == columns
    for cells in (report.test_return, report.train_return, report.test_success):
        for row in rows:
            for column in columns:
                values = cells[row][column].per_seed
                assert len(values) == seeds and all(math.isfinite(v) and 0.0 <= v <= 2.0 for v in values)


@pytest.mark.parametrize("table", ["2", "1"])
def test_tables_run_end_to_end(table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # presets and specs are found from the repository, not the working directory
    runner = Runner(TINY, mode="quick", work=tmp_path / "work", results=tmp_path / "results", workers=2, device="cpu")
    markdown = runner.run(table)  # type: ignore[arg-type]
    report = TableReport.model_validate_json((markdown.parent / f"table{table}.json").read_text(encoding="utf-8"))
    if table == "2":
        check(report, ["expert", "mixed"], ["none", "dac-output"], 2)
        assert report.protocol["jobs"]["2-expert-none"]["algorithm"] == "iql"
        assert len(report.protocol["datasets"]) == 4  # a fresh dataset per recipe and seed
    else:
        check(report, ["symmetric", "asymmetric"], ["0.1", "10"], 2)
        assert report.diagnostics["asymmetric"]["10"]["eta_max"] == pytest.approx(10.0)
    assert (markdown.parent / f"table{table}.png").exists()
    assert markdown.parent == tmp_path / "results" / "quick"


@pytest.mark.slow
@pytest.mark.parametrize("table", ["7", "2c"])
def test_cql_and_continuous_tables_run_end_to_end(table: str, tmp_path: Path) -> None:
    runner = Runner(TINY, mode="quick", work=tmp_path / "work", results=tmp_path / "results", workers=2, device="cpu")
    report = TableReport.model_validate_json(
        (runner.run(table).parent / f"table{table}.json").read_text(encoding="utf-8")  # type: ignore[arg-type]
    )
    check(report, ["expert", "mixed"], ["none", "dac-output"], 2)


def test_the_expert_normaliser_succeeds_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    spec = DatasetSpec("expert", True, 0, 1, ONE_CONTEXT, 100)
    env_spec = eval_env_spec(build_dataset(spec, tmp_path))
    from sim.contexts import ContextSets

    angles = ContextSets.model_validate(env_spec["kwargs"]["config"]["contexts"]).angles("test")
    returns = expert_returns(env_spec, angles, 0, 0.95)
    assert len(returns) == 100 and np.all((returns > 0.0) & (returns <= 1.0))


@pytest.mark.parametrize("name", ["paper.yaml", "paper-quick.yaml"])
def test_shipped_experiment_configs_are_valid(name: str) -> None:
    config = load_config(REPO / "deploy" / "experiment" / name, ExperimentConfig)
    assert set(config.offline_rl.steps) == {"2", "7", "2c"}
    assert config.offline_rl.target_updates == 200  # quick runs take fewer updates but as many target updates
