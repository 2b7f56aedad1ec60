"""Any robot through the pipeline: the KUKA iiwa profile from fleet bags to a Minari dataset (CI size)."""

from __future__ import annotations

import json
from pathlib import Path

import minari
import numpy as np
import pytest

from pipeline.fleet import FleetConfig, FleetManifest, record_fleet
from pipeline.ingest import IngestConfig, ingest
from pipeline.ingest.bag import IngestError
from pipeline.ingest.config import config_for_robot
from sim import ARM_ENV_ID
from sim.robots.env import ArmReachEnv


@pytest.fixture(scope="module")
def iiwa_fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FleetManifest]:
    out = tmp_path_factory.mktemp("iiwa") / "fleet"
    config = FleetConfig(robot="kuka_iiwa", robots=2, episodes=4, recipe="mixed")
    return out, record_fleet(config, out, workers=1)


def test_the_fleet_logs_the_profile_robot(iiwa_fleet: tuple[Path, FleetManifest]) -> None:
    _, manifest = iiwa_fleet
    session = manifest.sessions[0]
    assert sorted(session.joint_order) == [f"lbr_iiwa_joint_{i}" for i in range(1, 8)]
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
