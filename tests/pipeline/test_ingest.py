import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import minari
import numpy as np
import pytest

from pipeline.fleet import MANIFEST, FleetManifest, record_fleet
from pipeline.ingest import REPORT_JSON, REPORT_MD, IngestConfig, QualityReport, find_bags, ingest
from pipeline.io import load_config
from sim import DISCRETE_ENV_ID
from sim.reacher import RotationalReacherDiscreteEnv, RotationalReacherEnv
from tests.conftest import small_fleet_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def _episode_metadata(dataset: Any) -> list[dict[str, Any]]:
    episodes: list[dict[str, Any]] = dataset.storage.metadata["symgate"]["episodes"]
    return episodes


def assert_matches_simulator(dataset_id: str, manifest: FleetManifest, env: RotationalReacherEnv) -> int:
    """Replay every dataset episode in the simulator from its logged reset seed; compare at every control tick.

    Tolerances: joint angles 5 mrad (linear interpolation of 200 Hz samples), goal exact, rewards and
    terminations exact; joint velocities 0.05 rad/s at 95% of the ticks (causal extrapolation; an
    elbow hitting its joint limit between two samples is a velocity jump no resampling can see).
    """
    dataset = minari.load_dataset(dataset_id)
    truth = {(s.robot, e.start_ns): e for s in manifest.sessions for e in s.episodes}
    compared, velocity_errors = 0, []
    for episode, meta in zip(dataset.iterate_episodes(), _episode_metadata(dataset), strict=True):
        record = truth[(meta["source_bag"], meta["start_ns"])]
        observation, _ = env.reset(seed=record.reset_seed, options={"context": math.radians(record.context_deg)})
        simulated = [observation]
        for k, action in enumerate(episode.actions):
            observation, reward, terminated, _, _ = env.step(action)
            simulated.append(observation)
            assert (episode.rewards[k], episode.terminations[k]) == (reward, terminated), f"step {k}"
        expected = np.array(simulated)
        np.testing.assert_allclose(episode.observations[:, 0:2], expected[:, 0:2], atol=5e-3)
        np.testing.assert_allclose(episode.observations[:, 4:6], expected[:, 4:6], atol=1e-6)
        velocity_errors.extend(np.abs(episode.observations[:, 2:4] - expected[:, 2:4]).max(axis=1))
        assert len(episode.actions) == record.steps
        assert bool(episode.terminations[-1]) == record.success
        assert bool(episode.truncations[-1]) != record.success
        compared += 1
    assert np.percentile(velocity_errors, 95) < 0.05
    return compared


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FleetManifest]:
    out = tmp_path_factory.mktemp("ingest") / "fleet"
    return out, record_fleet(small_fleet_config(), out, workers=1)


def test_round_trip_matches_the_simulator(fleet: tuple[Path, FleetManifest], datasets: Path) -> None:
    out, manifest = fleet
    folder, report = ingest([out], IngestConfig(), "symgate/roundtrip-v0", workers=1)
    assert folder == datasets / "symgate/roundtrip-v0"
    compared = assert_matches_simulator("symgate/roundtrip-v0", manifest, RotationalReacherEnv(manifest.config.env))
    assert compared == sum(len(s.episodes) for s in manifest.sessions)
    assert len(report.kept) == compared and all(e.kept for b in report.bags for e in b.episodes)


def test_discrete_fleet_round_trips_to_action_indices(tmp_path: Path, datasets: Path) -> None:
    config = small_fleet_config(robots=1, episodes=2, discrete=True)
    manifest = record_fleet(config, tmp_path / "fleet", workers=1)
    ingest([tmp_path / "fleet"], IngestConfig(env_id=DISCRETE_ENV_ID), "symgate/discrete-v0", workers=1)
    dataset = minari.load_dataset("symgate/discrete-v0")
    episode = next(dataset.iterate_episodes())
    assert episode.actions.dtype.kind == "i" and set(np.unique(episode.actions)) <= set(range(9))
    assert assert_matches_simulator("symgate/discrete-v0", manifest, RotationalReacherDiscreteEnv(config.env)) == 2


def test_other_topic_names_and_joint_order_map_through_config_alone(tmp_path: Path, datasets: Path) -> None:
    fleet_config = small_fleet_config(
        robots=2,
        episodes=2,
        topics={"joint_states": "/arm/joint_states", "joint_commands": "/arm/effort_controller/commands"},
    )
    manifest = record_fleet(fleet_config, tmp_path / "fleet", workers=1)
    assert {tuple(s.joint_order) for s in manifest.sessions} == {("shoulder", "elbow"), ("elbow", "shoulder")}
    default = IngestConfig().model_dump()
    for name in ("joint_position", "joint_velocity"):
        default["observations"][name]["topic"] = "/arm/joint_states"
    default["action"]["joint_effort"]["topic"] = "/arm/effort_controller/commands"
    ingest([tmp_path / "fleet"], IngestConfig.model_validate(default), "symgate/renamed-v0", workers=1)
    assert assert_matches_simulator("symgate/renamed-v0", manifest, RotationalReacherEnv(fleet_config.env)) == 4


def test_dataset_loads_in_a_fresh_process_without_symgate(fleet: tuple[Path, FleetManifest], datasets: Path) -> None:
    out, _ = fleet
    ingest([out], IngestConfig(), "symgate/fresh-v0", workers=1)
    code = (
        "import sys, minari\n"
        "ds = minari.load_dataset('symgate/fresh-v0')\n"
        "assert not {'sim', 'pipeline', 'pybullet'} & set(sys.modules), 'symgate was imported'\n"
        "print(ds.total_episodes, ds.total_steps, ds.storage.metadata['eval_env_spec'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env={**os.environ}, check=False
    )
    assert done.returncode == 0, done.stderr
    episodes, steps, spec = done.stdout.split(" ", 2)
    assert int(episodes) == 6 and int(steps) > 6
    assert json.loads(spec)["id"] == "symgate/RotationalReacher-v0"


def test_metadata_records_names_units_config_and_sources(fleet: tuple[Path, FleetManifest], datasets: Path) -> None:
    out, manifest = fleet
    config = IngestConfig()
    folder, _ = ingest([out], config, "symgate/meta-v0", workers=1)
    dataset = minari.load_dataset("symgate/meta-v0")
    meta = dataset.storage.metadata["symgate"]
    env = RotationalReacherEnv()
    assert meta["observation_names"] == list(env.observation_names)
    assert meta["action_names"] == list(env.action_names)
    assert meta["observation_units"] == {"joint_position": "rad", "joint_velocity": "rad/s", "goal_position": "m"}
    assert meta["action_units"] == {"joint_effort": "N·m"}
    assert meta["joint_names"] == ["shoulder", "elbow"] and meta["control_hz"] == 50.0
    assert meta["ingest_config_sha256"] == config.sha256()
    assert IngestConfig.model_validate(meta["ingest_config"]) == config
    assert meta["source_bags"] == {s.robot: s.files for s in manifest.sessions}
    spans = [(e["source_bag"], e["start_ns"]) for e in meta["episodes"]]
    assert spans == [(s.robot, e.start_ns) for s in manifest.sessions for e in s.episodes]
    assert dataset.observation_space == env.observation_space and dataset.action_space == env.action_space
    report = QualityReport.model_validate_json((folder / REPORT_JSON).read_text())
    assert report.ingest_config_sha256 == config.sha256()
    assert "episodes kept" in (folder / REPORT_MD).read_text()


def test_quality_report_describes_each_bag(fleet: tuple[Path, FleetManifest], datasets: Path) -> None:
    out, manifest = fleet
    _, report = ingest([out], IngestConfig(), "symgate/report-v0", workers=1)
    for bag, session in zip(report.bags, manifest.sessions, strict=True):
        assert bag.bag == session.robot and bag.sha256 == session.files
        assert 190 < bag.topics["/joint_states"].rate_hz < 210
        assert 49 < bag.topics["/joint_commands"].rate_hz < 51
        assert bag.topics["/joint_states"].jitter_s > 0
        assert bag.message_counts["/joint_states"] == session.message_counts["/joint_states"]
        assert [e.success for e in bag.episodes] == [e.success for e in session.episodes]
        assert [e.controller for e in bag.episodes] == [e.controller for e in session.episodes]
        order_differs = bag.repairs["joint_position"]["joint_order_differs"]
        assert (order_differs > 0) == (session.joint_order != ["shoulder", "elbow"])
        assert sum(v for k, v in bag.repairs["joint_position"].items() if k != "joint_order_differs") == 0


def test_goal_changes_segment_episodes_without_markers(tmp_path: Path, datasets: Path) -> None:
    fleet_config = small_fleet_config(robots=1, episodes=3, topics={"episode_events": "/not_ingested"})
    manifest = record_fleet(fleet_config, tmp_path / "fleet", workers=1)
    config = IngestConfig.model_validate({"episodes": {"marker_topic": None}})
    _, report = ingest([tmp_path / "fleet"], config, "symgate/nomarkers-v0", workers=1)
    truth = manifest.sessions[0].episodes
    kept = report.bags[0].episodes
    assert [e.success for e in kept] == [e.success for e in truth]
    assert all(abs(e.steps - t.steps) <= 1 for e, t in zip(kept, truth, strict=True))


def test_parallel_workers_give_the_same_dataset(fleet: tuple[Path, FleetManifest], datasets: Path) -> None:
    out, _ = fleet
    _, inline = ingest([out], IngestConfig(), "symgate/inline-v0", workers=1)
    _, parallel = ingest(find_bags([out]), IngestConfig(), "symgate/parallel-v0", workers=2)
    assert inline.bags == parallel.bags
    a, b = minari.load_dataset("symgate/inline-v0"), minari.load_dataset("symgate/parallel-v0")
    for x, y in zip(a.iterate_episodes(), b.iterate_episodes(), strict=True):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)


def test_documented_ingest_yaml_is_the_default_config() -> None:
    assert load_config(REPO / "deploy/ingest/reacher.yaml", IngestConfig) == IngestConfig()


def test_config_must_produce_the_env_observation_layout(fleet: tuple[Path, FleetManifest], datasets: Path) -> None:
    out, _ = fleet
    default = IngestConfig().model_dump()
    default["observations"]["joint_position"]["joints"] = ["elbow", "shoulder"]
    default["observations"]["joint_position"]["wrap_joints"] = []
    from pipeline.ingest import IngestError

    with pytest.raises(IngestError, match=r"joint_position\.elbow.*the env observes.*joint_position\.shoulder"):
        ingest([out], IngestConfig.model_validate(default), "symgate/layout-v0", workers=1)
    assert not (datasets / "symgate/layout-v0").exists()


def test_manifest_is_not_mistaken_for_a_bag(fleet: tuple[Path, FleetManifest]) -> None:
    out, manifest = fleet
    assert (out / MANIFEST).exists()
    assert [b.name for b in find_bags([out])] == [s.robot for s in manifest.sessions]
    with pytest.raises(FileNotFoundError, match="no such bag"):
        find_bags([out / "nope"])
