from pathlib import Path

import pytest
from typer.testing import CliRunner

import pipeline.cli
from pipeline.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_demo_runs_every_stage_for_the_iiwa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline.cli, "DEMO_STEPS", 40)  # the stages, not the learning
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    result = runner.invoke(app, ["demo", "--robot", "kuka_iiwa", "--out", str(tmp_path / "demo")], terminal_width=200)
    assert result.exit_code == 0, result.output
    for strategy in ("none", "dac-output", "canonical"):
        assert (tmp_path / "demo" / "models" / strategy / "gate_report.json").is_file()
    assert (tmp_path / "demo" / "datasets" / "symgate" / "kuka_iiwa-fleet-v0").is_dir()
