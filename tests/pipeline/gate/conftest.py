"""Model folders for gate tests, all made by the real exporter.

- ``unsymmetrised_model``: behaviour cloning without any symmetry on expert data from context 0
  only: it works where the data was and nowhere else.
- ``expert_model``: the IK + PD expert (rotation-invariant by construction, ``tests.policies``)
  exported through the same ``write_model`` path as trained policies, with the contract of the
  trained model: the symmetric, expert-like policy the gate must pass.
"""

import shutil
from pathlib import Path

import pytest

from pipeline.export import load_contract
from pipeline.export.export import export_run
from pipeline.gate import GateConfig
from pipeline.gate.signing import init_keys
from pipeline.train import TrainConfig, train
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
