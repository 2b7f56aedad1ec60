"""The experiment's data protocols (one-context vs the authors' c4-poses) and env presets, on real datasets."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.datasets import open_dataset
from pipeline.experiment import ExperimentConfig
from pipeline.experiment.data import C4_CONTEXTS, ONE_CONTEXT, DatasetSpec, build_dataset, eval_env_spec, expert_returns
from pipeline.experiment.offline_rl import plan_training
from pipeline.fleet import FleetManifest
from sim.config import ReacherConfig
from sim.contexts import wrap_angle


def _episodes(dataset_id: str) -> list[dict[str, np.ndarray]]:
    dataset, _ = open_dataset(dataset_id)
    return [
        {"obs": np.asarray(e.observations), "rewards": np.asarray(e.rewards), "terminal": np.asarray(e.terminations)}
        for e in dataset.iterate_episodes()
    ]


def _ground_truth(folder: Path) -> list[tuple[int, bool]]:
    manifests = sorted(folder.rglob("fleet.json"))
    records = [
        (record.steps, record.success)
        for path in manifests
        for session in FleetManifest.model_validate(json.loads(path.read_text(encoding="utf-8"))).sessions
        for record in session.episodes
    ]
    return sorted(records)


def test_dataset_ids_name_the_env_and_protocol() -> None:
    assert DatasetSpec("expert", True, 3, 10, ONE_CONTEXT, 100).dataset_id == "paper/discrete-c1-expert-seed3-n10-v0"
    paper = DatasetSpec("expert", True, 3, 10, C4_CONTEXTS, 100, "paper", "c4-poses")
    assert paper.dataset_id == "paper/discrete-paperenv-c4poses-expert-seed3-n10-v0"
    assert paper.env().control_hz == 20 and paper.env().contexts.train_deg == C4_CONTEXTS


def test_c4_poses_plan_is_every_pose_in_every_rotation() -> None:
    spec = DatasetSpec("mixed", True, 1, 10, C4_CONTEXTS, 100, "paper", "c4-poses")
    fleets = spec.fleets()
    poses = spec.start_poses()
    assert len(poses) == len(set(poses)) == 10 and len(fleets) == 40
    assert all(-180 <= a < 180 and abs(b) <= math.degrees(2.6) + 1e-9 for a, b in poses)
    for index, fleet in enumerate(fleets):
        pose, rotation = divmod(index, 4)
        assert fleet.episodes == 1 and fleet.env.contexts.train_deg == (C4_CONTEXTS[rotation],)
        assert (fleet.env.start_shoulder_offset_deg, fleet.env.start_elbow_deg) == poses[pose]
        assert fleet.env.start_noise_deg == 0.0 and fleet.env.success_rule == "swept_path"
        assert fleet.recipe == ("expert" if pose < 5 else "suboptimal")  # mixed: half the poses each
    assert DatasetSpec("mixed", True, 2, 10, C4_CONTEXTS, 100, "paper", "c4-poses").start_poses() != poses
    (one,) = DatasetSpec("mixed", True, 1, 10, ONE_CONTEXT, 100, "paper").fleets()
    assert (one.episodes, one.recipe, one.env.contexts.train_deg) == (10, "mixed", (0.0,))


def test_experiment_config_selects_env_and_protocol(tmp_path: Path) -> None:
    config = ExperimentConfig.model_validate(
        {
            "seeds": 2,
            "env": "paper",
            "offline_rl": {"recipes": ["expert"], "strategies": ["none"], "data_protocol": "c4-poses"},
        }
    )
    (job,) = plan_training("2", config, tmp_path)
    assert [(d.env_preset, d.protocol, d.train_deg) for d in job.datasets] == [("paper", "c4-poses", C4_CONTEXTS)] * 2
    (job,) = plan_training(
        "2",
        config.model_copy(
            update={
                "env": "default",
                "offline_rl": config.offline_rl.model_copy(update={"data_protocol": "one-context"}),
            }
        ),
        tmp_path,
    )
    assert [(d.env_preset, d.protocol, d.train_deg) for d in job.datasets] == [
        ("default", "one-context", ONE_CONTEXT)
    ] * 2


def test_one_context_paper_dataset_is_all_in_context_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    spec = DatasetSpec("expert", True, 0, 3, ONE_CONTEXT, 10, "paper")
    episodes = _episodes(build_dataset(spec, tmp_path))
    assert len(episodes) == 3
    for episode in episodes:
        np.testing.assert_allclose(episode["obs"][:, 4:6], np.tile([1.0, 0.0], (len(episode["obs"]), 1)), atol=1e-6)
        start = episode["obs"][0]
        assert abs(math.degrees(start[0]) - 45.0) <= 2.0 + 1e-3 and abs(math.degrees(start[1]) + 90.0) <= 2.0 + 1e-3
        # The expert reaches the goal within 0.01 m in ~14 steps; success comes from the simulator's end marker.
        assert episode["terminal"][-1] and episode["rewards"][-1] == 1.0 and 12 <= len(episode["rewards"]) <= 20
    folder = tmp_path / "fleet" / spec.dataset_id.removeprefix("paper/")
    assert _ground_truth(folder) == sorted((len(e["rewards"]), bool(e["terminal"][-1])) for e in episodes)


def test_c4_poses_dataset_holds_each_pose_in_the_four_rotations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    spec = DatasetSpec("suboptimal", True, 0, 2, C4_CONTEXTS, 10, "paper", "c4-poses")
    episodes = _episodes(build_dataset(spec, tmp_path))
    assert len(episodes) == 8
    seen = []
    for episode in episodes:
        start = episode["obs"][0]
        bearing = math.atan2(start[5], start[4])
        assert math.hypot(start[4], start[5]) == pytest.approx(1.0, abs=1e-6)
        offset = math.degrees(float(wrap_angle(start[0] - bearing)))
        seen.append((round(math.degrees(bearing)) % 360, round(offset, 1), round(math.degrees(start[1]), 1)))
    poses = [(round(a, 1), round(b, 1)) for a, b in spec.start_poses()]
    assert sorted(seen) == sorted((rotation, *pose) for pose in poses for rotation in (0, 90, 180, 270))
    folder = tmp_path / "fleet" / spec.dataset_id.removeprefix("paper/")
    assert _ground_truth(folder) == sorted((len(e["rewards"]), bool(e["terminal"][-1])) for e in episodes)


@pytest.mark.parametrize("protocol", ["one-context", "c4-poses"])
def test_the_expert_normaliser_succeeds_everywhere_in_the_paper_env(
    protocol: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Returns are divided by the expert's from the same start: it must reach every held-out rotation."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    cover = ONE_CONTEXT if protocol == "one-context" else C4_CONTEXTS
    env_spec = eval_env_spec(build_dataset(DatasetSpec("expert", True, 0, 1, cover, 100, "paper", protocol), tmp_path))  # type: ignore[arg-type]
    angles = ReacherConfig.model_validate(env_spec["kwargs"]["config"]).contexts.angles("test")
    returns = expert_returns(env_spec, angles, 0, 0.95)
    # ~14 steps to the goal: γ^13 ≈ 0.51 (the default env's ~46 steps give ≈ 0.1).
    assert len(returns) == 100 and np.all((returns > 0.4) & (returns <= 1.0))
