"""Model folders for gate tests, all made by the real exporter.

- ``unsymmetrised_model``: behaviour cloning without any symmetry on expert data from context 0
  only: it works where the data was and nowhere else.
- ``expert_model``: the IK + PD expert (rotation-invariant by construction, ``tests.policies``)
  exported through the same ``write_model`` path as trained policies, with the contract of the
  trained model: the symmetric, expert-like policy the gate must pass.
- ``profile_run``: for each shipped robot profile, gate-style lock-step episodes of a policy that
  fails where the goal lies at y < 0, and replays of a failing and a passing one (clips, recordings).
"""

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from numpy.typing import NDArray

from pipeline.export import load_contract
from pipeline.export.export import export_run
from pipeline.gate import GateConfig
from pipeline.gate.render import Camera, RenderOptions, frame_step, workspace_points
from pipeline.gate.replay import Choice, EpisodeTrace, replay
from pipeline.gate.runner import EpisodeRecord, Task, plan_tasks
from pipeline.gate.signing import init_keys
from pipeline.train import TrainConfig, train
from sim import ARM_ENV_ID
from sim.config import DomainRandomization
from sim.robots.expert import ReachExpert
from sim.robots.profile import load_profile
from sim.rollout import BatchPolicy, run_lockstep
from tests.policies import export_expert

REPO = Path(__file__).resolve().parents[3]


def small_gate(**overrides: object) -> GateConfig:
    """20 held-out rotations, 10 episodes in the data's context, the shipped thresholds."""
    return GateConfig.model_validate(
        {
            "env": {"contexts": {"train_deg": [0.0], "test_count": 20}},
            "suites": [
                {"name": "train", "contexts": "train", "episodes_per_context": 10},
                {"name": "test", "contexts": "test", "min_success": 0.9, "min_success_ci_low": 0.8},
            ],
            "bootstrap_resamples": 500,
            **overrides,
        }
    )


@pytest.fixture(scope="session")
def unsymmetrised_model(tmp_path_factory: pytest.TempPathFactory, datasets_root: Path) -> Path:
    root = tmp_path_factory.mktemp("gate-models")
    config = TrainConfig.model_validate(
        {
            "algorithm": "bc",
            "steps": 3000,
            "batch_size": 128,
            "hidden": (64, 64),
            "log_every": 3000,
            "checkpoint_every": 3000,
            "metric_states": 64,
            "augmentation": {"strategy": "none", "spec": str(REPO / "deploy/symmetry/reacher.yaml")},
        }
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(datasets_root))
        train(config, "symgate/train-test-expert-v0", root / "run")
        export_run(root / "run", root / "model")
    return root / "model"


@pytest.fixture(scope="session")
def expert_model(tmp_path_factory: pytest.TempPathFactory, unsymmetrised_model: Path) -> Path:
    out = tmp_path_factory.mktemp("gate-expert") / "model"
    export_expert(load_contract(unsymmetrised_model), out)
    return out


@pytest.fixture(scope="session")
def gate_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The gate's key pair for these tests: (private key, public key)."""
    return init_keys(tmp_path_factory.mktemp("gate-keys"))


@pytest.fixture
def model_copy(tmp_path: Path) -> "ModelCopier":
    return ModelCopier(tmp_path)


class ModelCopier:
    """Copies a session-scoped model folder so that a test may damage it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, model: Path, name: str = "model") -> Path:
        target = self.root / name
        shutil.copytree(model, target)
        return target


@dataclass(frozen=True)
class ProfileRun:
    """Gate-like episodes of a robot profile's expert that holds still when the goal lies at y < 0, and replays."""

    config: GateConfig
    tasks: list[Task]
    records: list[EpisodeRecord]
    traces: list[EpisodeTrace]
    camera: Camera
    every: int


def half_expert(robot: str) -> Callable[[tuple[str, ...]], BatchPolicy]:
    """The profile's DLS expert where the goal's y >= 0, no motion elsewhere: it fails half the contexts."""
    profile = load_profile(robot)

    def policy_for(names: tuple[str, ...]) -> BatchPolicy:
        expert, goal_y = ReachExpert(profile, names), names.index("goal_position.y")
        rest = np.zeros(len(profile.joint_names))

        def policy(observations: NDArray[np.float32]) -> NDArray[np.float64]:
            return np.stack([expert.clip(expert.command(o)) if o[goal_y] >= 0 else rest for o in observations])

        return policy

    return policy_for


def run_profile(robot: str, options: RenderOptions) -> ProfileRun:
    """Run one task of 16 held-out contexts as the gate does, then replay a failing and a passing episode."""
    config = GateConfig.model_validate(
        {"robot": robot, "suites": [{"name": "test", "contexts": "test"}], "gap": None, "episodes_per_task": 16}
    )
    tasks = plan_tasks(config, ARM_ENV_ID)[:1]
    policy_for = half_expert(robot)
    records = []
    for task in tasks:
        envs = [gym.make(task.env_id, **json.loads(task.env_config)) for _ in task.seeds]
        names: tuple[str, ...] = envs[0].unwrapped.observation_names  # type: ignore[attr-defined]
        batch = run_lockstep(envs, policy_for(names), task.seeds, task.contexts)
        for env in envs:
            env.close()
        records += [
            EpisodeRecord(
                suite=task.suite, context_index=task.context_indices[i], context_rad=task.contexts[i],
                episode=task.episodes[i], seed=task.seeds[i], success=bool(batch.success[i]),
                steps=int(batch.steps[i]), non_finite_action=bool(batch.non_finite_action[i]),
            )
            for i in range(len(envs))
        ]  # fmt: skip
    failed = next(r for r in records if not r.success)
    passed = next(r for r in records if r.success)
    choices = [Choice("test", r.context_index, r.episode, (why,)) for r, why in ((failed, "worst"), (passed, "pass"))]
    angles = config.contexts.angles("test")
    points = workspace_points(ARM_ENV_ID, config.env_kwargs(DomainRandomization()), angles[::10].tolist())
    camera = Camera.framing(points, options.size_px)
    every = frame_step(config.control_hz, options.fps)
    traces = replay(tasks, records, choices, policy_for, config.control_hz, camera.capture, every)
    return ProfileRun(config, tasks, records, traces, camera, every)


@pytest.fixture(scope="session", params=["reacher", "kuka_iiwa"])
def profile_run(request: pytest.FixtureRequest) -> ProfileRun:
    return run_profile(str(request.param), RenderOptions())
