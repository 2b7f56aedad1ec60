import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from models.symmetry import SymmetrySpec
from pipeline.cli import app
from pipeline.datasets import DatasetError
from pipeline.fleet import FleetConfig, record_fleet
from pipeline.ingest import IngestConfig, datasets_root, ingest
from pipeline.io import ConfigError
from pipeline.symmetry import CheckTolerances, SymmetryCheckReport, check_symmetry, load_symmetry_spec
from sim import DISCRETE_ENV_ID
from tests.models.test_symmetry import REACHER_YAML, mirror_spec_dict

CONTINUOUS, DISCRETE = "symgate/symcheck-v0", "symgate/symcheck-discrete-v0"
SAMPLES = 48
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real fleet (1 robot, 2 mixed episodes), ingested continuous and discrete."""
    root = tmp_path_factory.mktemp("symcheck")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root / "datasets"))
        for dataset_id, discrete, env_id in ((CONTINUOUS, False, None), (DISCRETE, True, DISCRETE_ENV_ID)):
            fleet = root / dataset_id.replace("/", "_")
            record_fleet(
                FleetConfig.model_validate({"robots": 1, "episodes": 2, "discrete": discrete}), fleet, workers=1
            )
            config = IngestConfig(env_id=env_id) if env_id else IngestConfig()
            ingest([fleet], config, dataset_id, workers=1)
        yield root / "datasets"


def reacher_with(**observation: Any) -> SymmetrySpec:
    data = load_symmetry_spec(REACHER_YAML).model_dump(mode="json")
    data["observation"].update(observation)
    return SymmetrySpec.model_validate(data)


def check(spec: SymmetrySpec, dataset_id: str = CONTINUOUS) -> SymmetryCheckReport:
    return check_symmetry(spec, dataset_id, samples=SAMPLES, seed=1)


def residual(report: SymmetryCheckReport, field: str) -> float:
    entry = next(f for f in report.fields if f.field == field)
    return max(entry.ratio_median, entry.ratio_p95)


def test_the_reacher_spec_is_respected() -> None:
    report = check(load_symmetry_spec(REACHER_YAML))
    assert report.passed and not report.violations
    assert report.reward_flips == 0 and report.max_distance_change_m < 1e-9
    assert report.dataset_reward_mismatch_fraction == 0.0  # the recomputed reach rule is ingestion's
    assert {f.field for f in report.fields} == {"joint_position", "joint_velocity", "goal_position"}
    assert all(residual(report, field) < 2.0 for field in ("joint_position", "joint_velocity"))
    assert report.samples == SAMPLES and report.transitions > SAMPLES and report.env_id.endswith("RotationalReacher-v0")


def test_rotating_the_goal_but_not_the_shoulder_is_caught_by_the_reward() -> None:
    # The arm's dynamics do not see the goal, so only the reward can tell: the hand stays put while the goal moves.
    report = check(reacher_with(joint_position=[{"transform": "invariant"}]))
    assert not report.passed
    assert report.reward_flips > 0 and report.max_distance_change_m > 0.1
    assert any("reward/termination changes" in v for v in report.violations)


def test_shifting_the_elbow_instead_of_the_shoulder_is_caught() -> None:
    report = check(
        reacher_with(
            joint_position=[
                {"transform": "angle_shift", "components": ["elbow"]},
                {"transform": "invariant", "components": ["shoulder"]},
            ]
        )
    )
    assert not report.passed and report.reward_flips > 0
    assert residual(report, "joint_velocity") > 10
    assert any("dynamics of 'joint_velocity'" in v for v in report.violations)


def test_mirror_symmetry_of_the_arm_and_a_wrong_velocity_map() -> None:
    assert check(SymmetrySpec.model_validate(mirror_spec_dict())).passed
    # Velocities must flip under mirror; leaving them invariant keeps the reward exact but breaks the dynamics.
    report = check(SymmetrySpec.model_validate(mirror_spec_dict(joint_velocity="invariant")))
    assert report.reward_flips == 0 and report.max_distance_change_m < 1e-9
    assert not report.passed and residual(report, "joint_velocity") > 10


def test_discrete_dataset_maps_action_indices() -> None:
    assert check(SymmetrySpec.model_validate(mirror_spec_dict()), DISCRETE).passed
    wrong = mirror_spec_dict()
    wrong["action"] = {"joint_effort": "invariant"}  # torques must flip under mirror
    report = check(SymmetrySpec.model_validate(wrong), DISCRETE)
    assert not report.passed and residual(report, "joint_velocity") > 10


def test_tolerances_decide_the_verdict() -> None:
    wrong = reacher_with(joint_position=[{"transform": "invariant"}])
    lenient = CheckTolerances(max_reward_flip_fraction=1.0, max_distance_change_m=10.0)
    assert check_symmetry(wrong, CONTINUOUS, samples=8, tolerances=lenient).passed


def test_a_spec_that_does_not_fit_the_dataset_is_a_config_error() -> None:
    data = load_symmetry_spec(REACHER_YAML).model_dump(mode="json")
    data["observation"]["hand_position"] = [{"transform": "rotate2d"}]
    with pytest.raises(ConfigError, match="does not fit dataset .*observation field 'hand_position' is unknown"):
        check(SymmetrySpec.model_validate(data))
    with pytest.raises(DatasetError, match="'symgate/missing-v0': not found"):
        check(load_symmetry_spec(REACHER_YAML), "symgate/missing-v0")


# ----------------------------------------------------------------------------- CLI
def test_cli_passes_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    args = ["symmetry", "check", "--spec", str(REACHER_YAML), "--dataset", CONTINUOUS, "--samples", "16"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "respects the spec" in result.output and "joint_velocity" in result.output
    report = SymmetryCheckReport.model_validate_json(out.read_text())
    assert report.passed and report.samples == 16
    result = runner.invoke(app, args)  # default: next to the dataset
    assert result.exit_code == 0, result.output
    assert json.loads((datasets_root() / CONTINUOUS / "symmetry_check-reacher.json").read_text())["passed"]


def test_cli_exits_1_on_a_wrong_spec(tmp_path: Path) -> None:
    wrong = reacher_with(joint_position=[{"transform": "invariant"}]).model_dump(mode="json")
    spec = tmp_path / "wrong.yaml"
    spec.write_text(yaml.safe_dump(wrong))
    out = tmp_path / "wrong.json"
    result = runner.invoke(
        app, ["symmetry", "check", "--spec", str(spec), "--dataset", CONTINUOUS, "--samples", "8", "--out", str(out)]
    )
    assert result.exit_code == 1, result.output
    assert "VIOLATES" in result.output and "violation:" in result.output
    assert not json.loads(out.read_text())["passed"]


def test_cli_bad_spec_is_one_clear_line(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("groups: [rotation]\nobservation:\n  goal_position: {transform: rotate2d, components: [x]}\n")
    result = runner.invoke(app, ["symmetry", "check", "--spec", str(spec), "--dataset", CONTINUOUS])
    assert result.exit_code == 2
    assert "bad.yaml: invalid SymmetrySpec" in result.output and "rotate2d needs exactly 2" in result.output
    assert "action" in result.output  # the missing action section is named too
    assert "Traceback" not in result.output
