import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pipeline.cli
from pipeline.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_demo_runs_every_stage_for_the_iiwa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline.cli, "DEMO_PROFILE_STEPS", 100)  # the stages, not the learning (50 steps already pass)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    result = runner.invoke(app, ["demo", "--robot", "kuka_iiwa", "--out", str(tmp_path / "demo")], terminal_width=200)
    assert result.exit_code == 0, result.output
    for strategy in ("none", "dac-output", "canonical"):
        assert (tmp_path / "demo" / "models" / strategy / "gate_report.json").is_file()
    assert (tmp_path / "demo" / "datasets" / "symgate" / "kuka_iiwa-fleet-v0").is_dir()
    models = tmp_path / "demo" / "models"
    assert (models / "canonical" / "certificate.json").is_file()  # the canonical policy passes the gate
    for strategy in ("none", "dac-output", "canonical"):  # stage 5: every certified policy served over ROS 2
        if (models / strategy / "certificate.json").is_file():
            outcome = json.loads((models / strategy / "serve_sim.json").read_text())
            assert outcome["robot"] == "kuka_iiwa"  # sim_robot ran the iiwa
            assert outcome["bad_commands"] == 0 and len(outcome["episodes"]) == 10
