"""Model folders for gate tests, all made by the real exporter.

- ``unsymmetrised_model``: behaviour cloning without any symmetry on expert data from context 0
  only: it works where the data was and nowhere else.
- ``expert_model``: the IK + PD expert (rotation-invariant by construction) written as a torch
  module and exported through the same ``write_model`` path as trained policies, with the contract
  of the trained model: the symmetric, expert-like policy the gate must pass.
"""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from models.symmetry import SymmetrySpec, wrap_angle
from pipeline.export import Contract, load_contract
from pipeline.export.export import export_run, write_model
from pipeline.gate import GateConfig
from pipeline.train import TrainConfig, train
from sim.behaviour import BehaviourConfig
from sim.robot import load_robot_description

REPO = Path(__file__).resolve().parents[3]


class TorchExpert(nn.Module):
    """``sim.behaviour.ExpertPolicy`` in torch: IK to the goal, PD on the wrapped joint error, clipped."""

    def __init__(self) -> None:
        super().__init__()
        robot, gains = load_robot_description(), BehaviourConfig()
        (self.l1, self.l2), self.kp, self.kd = robot.link_lengths, gains.kp, gains.kd
        self.tau = float(robot.effort_limits[0])

    def forward(self, *signals: Tensor) -> Tensor:
        """``joint_position``, ``joint_velocity``, ``goal_position`` (the contract's input order) → torques.

        Computed in float64 like exported policies; ONNX Runtime has no float64 Atan, so angles come from
        :func:`_atan2`.
        """
        q, v, goal = (signal.double() for signal in signals)
        r2 = (goal * goal).sum(-1)
        cos_elbow = torch.clamp((r2 - self.l1**2 - self.l2**2) / (2 * self.l1 * self.l2), -1.0, 1.0)
        sin_elbow = torch.sqrt(1.0 - cos_elbow**2)
        elbow = _atan2(sin_elbow, cos_elbow)
        shoulder = _atan2(goal[:, 1], goal[:, 0]) - _atan2(self.l2 * sin_elbow, self.l1 + self.l2 * cos_elbow)
        error = wrap_angle(torch.stack([shoulder, elbow], dim=-1) - q)
        return torch.clamp(self.kp * error - self.kd * v, -self.tau, self.tau).float()


def _atan2(y: Tensor, x: Tensor) -> Tensor:
    """float64 atan2: a float32 guess refined by one Newton step on ``x·sin θ - y·cos θ = 0``."""
    guess = torch.atan2(y.float(), x.float()).double()
    cos, sin = torch.cos(guess), torch.sin(guess)
    return guess + (y * cos - x * sin) / (x * cos + y * sin)


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
    trained = load_contract(unsymmetrised_model)
    contract = Contract.model_validate(
        {**trained.model_dump(), "strategy": "ik-pd-expert", "algorithm": "none", "parity": None, "equivariance": None}
    )
    names = contract.observation_names
    groups = [(spec.name, [names.index(f"{spec.name}.{c}") for c in spec.components]) for spec in contract.inputs]
    symmetry = SymmetrySpec.model_validate(contract.symmetry_spec).bind(
        names, [f"joint_effort.{j}" for j in contract.joint_names]
    )
    rng = np.random.default_rng(0)
    bearing = rng.uniform(-math.pi, math.pi, 10_000)
    states = np.column_stack(
        [
            rng.uniform(-math.pi, math.pi, (10_000, 2)),
            rng.normal(0.0, 3.0, (10_000, 2)),
            0.7 * np.cos(bearing),
            0.7 * np.sin(bearing),
        ]
    ).astype(np.float32)
    out = tmp_path_factory.mktemp("gate-expert") / "model"
    write_model(TorchExpert().eval(), contract, groups, states, symmetry, out, source="IK+PD expert")
    return out


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
