import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.export import CONTRACT_FILE, ONNX_FILE, Contract, ContractError, load_contract
from pipeline.export.contract import METADATA_KEY
from pipeline.export.export import _random_states, export_run
from pipeline.train.buffer import load_offline_data
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import train
from tests.pipeline.conftest import SHORT_ARM_ELBOW_LIMIT

REPO = Path(__file__).resolve().parents[3]


def _train(dataset: str, out: Path, **overrides: Any) -> Path:
    config = TrainConfig.model_validate(
        {
            "steps": 30,
            "batch_size": 64,
            "hidden": (64, 64),
            "log_every": 30,
            "checkpoint_every": 30,
            "metric_states": 64,
            **overrides,
            "augmentation": {"spec": str(REPO / "deploy/symmetry/reacher.yaml"), **overrides.get("augmentation", {})},
        }
    )
    train(config, dataset, out)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, datasets_root: Path) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(datasets_root))
        return _train("symgate/train-test-v0", tmp_path_factory.mktemp("export") / "run", seeds=2)


def test_export_runs_in_onnx_runtime_with_one_named_input_and_parity(run: Path, dataset: str, tmp_path: Path) -> None:
    contract = export_run(run, tmp_path / "model", member=1)
    assert [i.name for i in contract.inputs] == ["observation"]
    assert contract.inputs[0].components == contract.observation_names
    assert [s.name for s in contract.signals] == ["joint_position", "joint_velocity", "goal_position"]
    assert [s.unit for s in contract.signals] == ["rad", "rad/s", "m"]
    assert [o.name for o in contract.outputs] == ["joint_effort"] and contract.seed == 1
    assert contract.parity is not None and contract.parity.states >= 10_000 and contract.parity.max_abs_diff <= 1e-5
    assert contract.equivariance is not None and contract.equivariance.states > 0
    assert contract.joint_names == ("shoulder", "elbow") and contract.control_hz == 50.0
    session = ort.InferenceSession(str(tmp_path / "model" / ONNX_FILE), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        feeds = {i.name: np.zeros((batch, i.shape[1] or 0), dtype=np.float32) for i in contract.inputs}
        (action,) = session.run(None, feeds)
        assert action.shape == (batch, 2) and np.all(np.abs(action) <= 2.0)
    model = onnx.load(str(tmp_path / "model" / ONNX_FILE))
    onnx.checker.check_model(model, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert model.opset_import[0].version >= 17


def test_contract_round_trips_through_json_and_onnx_metadata(run: Path, dataset: str, tmp_path: Path) -> None:
    contract = export_run(run, tmp_path / "model")
    assert load_contract(tmp_path / "model") == contract
    assert Contract.model_validate_json((tmp_path / "model" / CONTRACT_FILE).read_text()) == contract
    model = onnx.load(str(tmp_path / "model" / ONNX_FILE))
    embedded = Contract.model_validate_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert embedded == contract.model_copy(update={"onnx_sha256": "", "parity": None, "equivariance": None})


def test_tampered_onnx_bytes_are_detected(run: Path, dataset: str, tmp_path: Path) -> None:
    export_run(run, tmp_path / "model")
    path = tmp_path / "model" / ONNX_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ContractError, match="does not match the contract"):
        load_contract(tmp_path / "model")


@pytest.mark.parametrize("algorithm", ["iql", "cql"])  # cql: the argmax of Q (no actor)
def test_discrete_policies_export_action_indices(discrete_dataset: str, tmp_path: Path, algorithm: str) -> None:
    run = _train(discrete_dataset, tmp_path / "run", algorithm=algorithm)
    contract = export_run(run, tmp_path / "model")
    assert [o.name for o in contract.outputs] == ["action_index"] and contract.outputs[0].dtype == "int64"
    assert contract.parity is not None and contract.parity.argmax_agreement == 1.0
    assert contract.discrete_action_torques is not None and len(contract.discrete_action_torques) == 9


def test_canonical_export_is_exactly_invariant(dataset: str, tmp_path: Path) -> None:
    run = _train(dataset, tmp_path / "run", augmentation={"strategy": "canonical"})
    contract = export_run(run, tmp_path / "model")
    assert contract.equivariance is not None and contract.equivariance.max_error < 1e-4
    assert contract.parity is not None and contract.parity.max_abs_diff <= 1e-5


def test_unfinished_run_is_refused_and_nothing_is_written(run: Path, dataset: str, tmp_path: Path) -> None:
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((run / "config.yaml").read_text())
    with pytest.raises(ContractError, match="has not finished"):
        export_run(unfinished, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def _copy_run(run: Path, target: Path) -> tuple[Path, Path]:
    import shutil

    shutil.copytree(run, target)
    latest = json.loads((target / "checkpoints/latest.json").read_text())["path"]
    return target, target / "checkpoints" / latest / "tensors.safetensors"


def test_corrupt_checkpoint_is_refused(run: Path, dataset: str, tmp_path: Path) -> None:
    copy, tensors = _copy_run(run, tmp_path / "run")
    tensors.write_bytes(tensors.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or incomplete"):
        export_run(copy, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_nan_weights_are_refused(run: Path, dataset: str, tmp_path: Path) -> None:
    copy, tensors = _copy_run(run, tmp_path / "run")
    state = load_file(str(tensors))
    key = next(k for k in state if k.startswith("module.actor.") and k.endswith("weight"))
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(tensors))
    with pytest.raises(ContractError, match="NaN/inf"):
        export_run(copy, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_existing_model_folder_is_not_overwritten(run: Path, dataset: str, tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    with pytest.raises(FileExistsError):
        export_run(run, tmp_path / "model")


class _NanPolicy(torch.nn.Module):
    def __init__(self, observation_names: tuple[str, ...]) -> None:
        super().__init__()
        self.velocity = [i for i, name in enumerate(observation_names) if name.startswith("joint_velocity.")]

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        velocity = observation[:, self.velocity]
        return velocity / (velocity - velocity)


def test_a_policy_that_returns_nan_is_refused(run: Path, dataset: str, tmp_path: Path) -> None:
    from models.symmetry import SymmetrySpec
    from pipeline.export.export import write_model

    contract = export_run(run, tmp_path / "model")
    names = contract.observation_names
    symmetry = SymmetrySpec.model_validate(contract.symmetry_spec).bind(
        names, ["joint_effort.shoulder", "joint_effort.elbow"]
    )
    states = np.zeros((16, len(names)), dtype=np.float32)
    with pytest.raises(ContractError, match="returns NaN/inf"):
        write_model(_NanPolicy(names), contract, states, symmetry, tmp_path / "nan")
    assert not (tmp_path / "nan").exists()


def test_random_states_keep_the_datasets_own_joint_limits(
    short_arm_dataset: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parity and equivariance are checked on states of the arm the dataset was recorded with (elbow ±1.5 rad)."""
    root, dataset_id = short_arm_dataset
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    data = load_offline_data(dataset_id, torch.device("cpu"), 0.99)
    states = _random_states(data, 2000, np.random.default_rng(0))
    elbow = states[:, data.observation_names.index("joint_position.elbow")]
    assert np.abs(elbow).max() <= SHORT_ARM_ELBOW_LIMIT < 2.6 and np.abs(elbow).max() > 1.4
