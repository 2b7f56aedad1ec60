"""Any robot through the pipeline: the KUKA iiwa profile from fleet bags to a Minari dataset (CI size)."""

from __future__ import annotations

import json
from pathlib import Path

import minari
import numpy as np
import pytest

from models.symmetry import SymmetrySpec
from pipeline.export import load_contract
from pipeline.fleet import FleetConfig, FleetManifest, record_fleet
from pipeline.gate import GateConfig, run_gate
from pipeline.ingest import IngestConfig, ingest
from pipeline.ingest.bag import IngestError
from pipeline.ingest.config import config_for_robot
from pipeline.io import sha256_json
from pipeline.symmetry import check_symmetry
from sim import ARM_ENV_ID
from sim.robots.env import ArmReachEnv
from sim.robots.profile import load_profile
from tests.iiwa import IIWA_JOINTS, tiny_iiwa_model


@pytest.fixture(scope="module")
def iiwa_fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FleetManifest]:
    out = tmp_path_factory.mktemp("iiwa") / "fleet"
    config = FleetConfig(robot="kuka_iiwa", robots=2, episodes=4, recipe="mixed")
    return out, record_fleet(config, out, workers=1)


def test_the_fleet_logs_the_profile_robot(iiwa_fleet: tuple[Path, FleetManifest]) -> None:
    _, manifest = iiwa_fleet
    session = manifest.sessions[0]
    assert sorted(session.joint_order) == list(IIWA_JOINTS)
    assert session.joint_order != sorted(session.joint_order)  # each driver lists joints in its own order
    experts = [e for e in session.episodes if e.controller == "expert"]
    assert experts and all(e.success and e.steps < 30 for e in experts)


def test_ingest_of_the_profile_mapping_reproduces_the_episodes(
    iiwa_fleet: tuple[Path, FleetManifest], datasets_root: Path
) -> None:
    out, manifest = iiwa_fleet
    config = config_for_robot("kuka_iiwa")
    assert config.env_id == ARM_ENV_ID
    _, report = ingest([out], config, "symgate/iiwa-ci-v0", workers=1)
    dataset = minari.load_dataset("symgate/iiwa-ci-v0")
    truth = [e for s in manifest.sessions for e in s.episodes]
    assert dataset.total_episodes == len(truth)
    spec = json.loads(dataset.storage.metadata["eval_env_spec"])
    assert (spec["id"], spec["kwargs"]) == (ARM_ENV_ID, {"robot": "kuka_iiwa"})
    env = dataset.recover_environment(eval_env=True)
    assert isinstance(env.unwrapped, ArmReachEnv)
    assert env.unwrapped.robot.name == "kuka_iiwa"
    for episode, ground_truth in zip(dataset.iterate_episodes(), truth, strict=True):
        assert len(episode.actions) == ground_truth.steps  # the 3-D reach rule ends it where the simulator did
        assert bool(episode.terminations[-1]) == ground_truth.success
        assert episode.observations.shape[1] == 17
        assert np.abs(episode.actions).max() <= 2.0 + 1e-6  # velocity targets within the profile's limits
    goal = episode.observations[0, -3:]
    np.testing.assert_allclose(goal[2], 0.5, atol=1e-6)  # goal_position.z comes through the bag
    assert report is not None


def test_ingest_refuses_a_reacher_mapping_for_the_iiwa(
    iiwa_fleet: tuple[Path, FleetManifest], datasets_root: Path
) -> None:
    out, _ = iiwa_fleet
    mapping = IngestConfig.model_validate({"robot": "kuka_iiwa", "env_id": ARM_ENV_ID, "control_hz": 20.0})
    with pytest.raises(IngestError, match="observations produce .*joint_position.shoulder"):
        ingest([out], mapping, "symgate/iiwa-bad-v0", workers=1)


@pytest.fixture(scope="module")
def iiwa_model(
    iiwa_fleet: tuple[Path, FleetManifest], datasets_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """fleet → ingest → canonical IQL → ONNX, CI size."""
    out, _ = iiwa_fleet
    return tiny_iiwa_model(out, "symgate/iiwa-model-v0", tmp_path_factory.mktemp("iiwa-run"))


def test_the_iiwa_policy_exports_with_a_contract_naming_the_profile(iiwa_model: Path) -> None:
    contract = load_contract(iiwa_model)
    assert contract.robot == "kuka_iiwa"
    assert contract.action_interface == "velocity"
    assert contract.joint_names == IIWA_JOINTS
    assert contract.control_hz == 20.0
    assert contract.outputs[0].name == "joint_velocity_target"
    assert [spec.name for spec in contract.inputs] == ["observation"]
    assert [spec.name for spec in contract.signals] == ["joint_position", "joint_velocity", "goal_position"]
    assert contract.signals[0].components == IIWA_JOINTS
    assert contract.symmetry_spec["observation"]["joint_position"][0]["components"] == ["lbr_iiwa_joint_1"]
    assert contract.equivariance is not None
    assert contract.equivariance.mean_error < 1e-4  # canonical: invariant by construction


GATE_CI = {
    "suites": [
        {"name": "train", "contexts": "train", "episodes_per_context": 4},
        {"name": "test", "contexts": "test", "episodes_per_context": 1, "min_success": 0.0, "min_success_ci_low": 0.0},
    ],
    "gap": None,
    "bootstrap_resamples": 100,
}


def test_the_gate_runs_the_iiwa_model_on_the_contract_s_robot(iiwa_model: Path, tmp_path: Path) -> None:
    outcome = run_gate(iiwa_model, GateConfig.model_validate(GATE_CI), workers=1, report_dir=tmp_path)
    assert outcome.report.reasons == ()
    assert [suite.name for suite in outcome.report.suites] == ["train", "test"]
    assert outcome.report.suites[1].episodes == 100
    assert outcome.report.gate_config["robot"] == "kuka_iiwa"
    # The hash the certificate binds is the resolved config's (the robot node re-hashes the report's).
    assert outcome.report.gate_config_sha256 == sha256_json(outcome.report.gate_config)


def test_the_gate_refuses_a_contract_for_another_robot(iiwa_model: Path, tmp_path: Path) -> None:
    config = GateConfig.model_validate({**GATE_CI, "robot": "reacher"})
    outcome = run_gate(iiwa_model, config, workers=1, report_dir=tmp_path)
    assert outcome.report.verdict == "fail"
    assert outcome.certificate is None
    reasons = "\n".join(outcome.report.reasons)
    for problem in (
        "robot: contract 'kuka_iiwa', env 'reacher'",
        "joint_names: contract",
        "action_interface: contract velocity, robot effort",
        "control_hz: contract 20 Hz, robot 50 Hz",
    ):
        assert problem in reasons
    assert outcome.report.episodes == ()  # nothing ran


def test_the_symmetry_check_passes_on_the_iiwa_with_its_derived_spec(
    iiwa_fleet: tuple[Path, FleetManifest], datasets_root: Path
) -> None:
    out, _ = iiwa_fleet
    ingest([out], config_for_robot("kuka_iiwa"), "symgate/iiwa-sym-v0", workers=1)
    spec = SymmetrySpec.model_validate(load_profile("kuka_iiwa").symmetry_spec())
    report = check_symmetry(spec, "symgate/iiwa-sym-v0", samples=32)
    assert report.passed, report.violations
    wrong = SymmetrySpec.model_validate(
        {
            **spec.model_dump(mode="json"),
            "observation": {**spec.model_dump(mode="json")["observation"], "joint_position": "invariant"},
        }
    )
    assert not check_symmetry(wrong, "symgate/iiwa-sym-v0", samples=32).passed  # joint 1 must turn with the goal
