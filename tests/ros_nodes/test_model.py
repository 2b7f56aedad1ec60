"""The robot-side model loader agrees with the gate: same certificates accepted, same tampering refused."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.export import load_contract
from pipeline.gate import CertificateError, verify_certificate
from symgate_ros.model import CERTIFICATE_FILE, CONTRACT_FILE, ModelError, PolicyModel
from symgate_ros.signature import load_trusted_keys
from tests.ros_nodes.conftest import Models


def test_certified_model_loads_and_acts(models: Models) -> None:
    model = PolicyModel(models.certified, trusted=load_trusted_keys([models.trusted_key]))
    gate = verify_certificate(models.certified, load_contract(models.certified), [models.trusted_key])
    assert model.certificate_id == gate.certificate_id
    assert model.joint_names == ("shoulder", "elbow") and model.control_hz == 50.0
    assert [(s.group, s.joint, s.axis) for s in model.observation] == [
        ("joint_position", 0, ""),
        ("joint_position", 1, ""),
        ("joint_velocity", 0, ""),
        ("joint_velocity", 1, ""),
        ("goal_position", -1, "x"),
        ("goal_position", -1, "y"),
    ]
    observation = np.zeros((1, len(model.observation)), np.float32)
    observation[0, -2:] = (0.0, 0.7)  # the goal
    torque = model.act(observation)
    assert torque.shape == (2,) and np.isfinite(torque).all()


def _edit(models: Models, tmp_path: Path, file: str, key: str, value: object) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(models.certified, copy)
    data = json.loads((copy / file).read_text())
    data[key] = value
    (copy / file).write_text(json.dumps(data))
    return copy


@pytest.mark.parametrize(
    ("file", "key", "value", "robot_says"),
    [
        (CERTIFICATE_FILE, "gate_config_sha256", "0" * 64, "certificate.json: sha256 .* differs from the signed"),
        (CONTRACT_FILE, "control_hz", 100.0, "contract.json: sha256 .* differs from the signed"),
    ],
)
def test_robot_and_gate_refuse_the_same_edits(
    models: Models, tmp_path: Path, file: str, key: str, value: object, robot_says: str
) -> None:
    copy = _edit(models, tmp_path, file, key, value)
    with pytest.raises(ModelError, match=robot_says):
        PolicyModel(copy, trusted=load_trusted_keys([models.trusted_key]))
    with pytest.raises(CertificateError):
        verify_certificate(copy, load_contract(copy), [models.trusted_key])


def test_missing_certificate_and_tampered_onnx(models: Models) -> None:
    with pytest.raises(ModelError, match=r"model.sig: missing: the model folder is not signed"):
        PolicyModel(models.uncertified, trusted=load_trusted_keys([models.trusted_key]))
    assert PolicyModel(models.uncertified, allow_uncertified=True).certificate_id is None
    with pytest.raises(ModelError, match="does not match the contract"):
        PolicyModel(models.tampered, allow_uncertified=True)  # the hash check is never optional


def test_swap_compatibility(models: Models) -> None:
    trusted = load_trusted_keys([models.trusted_key])
    current, other = (
        PolicyModel(models.certified, trusted=trusted),
        PolicyModel(models.certified_other, trusted=trusted),
    )
    assert current.compatible_with(other) == [] and current.onnx_sha256 != other.onnx_sha256


def test_a_contract_of_another_schema_is_refused_with_a_re_export_hint(models: Models, tmp_path: Path) -> None:
    copy = _edit(models, tmp_path, CONTRACT_FILE, "schema_version", 1)  # one graph input per signal group
    with pytest.raises(ModelError, match="schema_version 1, this node reads 2 .*export the model again"):
        PolicyModel(copy, allow_uncertified=True)
