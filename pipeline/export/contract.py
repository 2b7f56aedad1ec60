"""The deployment contract: everything a robot needs to feed an exported policy and trust it.

``contract.json`` sits next to ``policy.onnx`` and is also embedded in the ONNX file's
``metadata_props`` (key ``symgate.contract``), there without ``onnx_sha256`` (a file cannot hold
its own hash). The robot side reads only this model and the ONNX file: no torch, no symgate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.io import UserInputError, sha256_file, sha256_json

CONTRACT_FILE = "contract.json"
ONNX_FILE = "policy.onnx"
METADATA_KEY = "symgate.contract"
#: The graph's one input: every observation component, in ``Contract.observation_names`` order.
OBSERVATION_INPUT = "observation"


class ContractError(UserInputError):
    """A model folder is incomplete, tampered with, or its contract is invalid; the message says which."""


class TensorSpec(BaseModel):
    """One named input or output of the graph, or one raw signal group the robot provides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Graph input/output name, or signal group name (e.g. joint_position).")
    shape: tuple[int | None, ...] = Field(description="Shape; None is the dynamic batch axis.")
    dtype: Literal["float32", "int64"] = Field(description="Element type.")
    components: tuple[str, ...] = Field(description="Names of the last axis' entries, in order (e.g. joints).")
    unit: str = Field(description="Physical unit of the values ('' for the observation input: see signals).")


class Parity(BaseModel):
    """Torch vs ONNX Runtime on the same states."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    states: int = Field(description="States compared (dataset states and random ones).")
    max_abs_diff: float = Field(description="Largest |torch - onnxruntime| over every action component.")
    argmax_agreement: float = Field(description="Fraction of identical discrete actions (1.0 for continuous).")


class Equivariance(BaseModel):
    """How symmetric the exported graph is under rotations drawn uniformly from SO(2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    states: int = Field(description="States × rotations evaluated.")
    mean_error: float = Field(description="Mean ‖π(g·o) - g·π(o)‖ (continuous) or disagreement rate (discrete).")
    max_error: float = Field(description="Largest such error.")


class Contract(BaseModel):
    """The I/O contract of one exported policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[2] = Field(2, description="Version of this contract format (2: one observation input).")
    symgate_version: str = Field(description="symgate version that exported the model.")
    inputs: tuple[TensorSpec, ...] = Field(
        description="Graph inputs: one, `observation`, whose components are observation_names (group.component)."
    )
    signals: tuple[TensorSpec, ...] = Field(
        description="The raw signal groups the observation holds (joint_position, goal_position, ...), with units."
    )
    outputs: tuple[TensorSpec, ...] = Field(description="Graph outputs (joint_effort or action_index).")
    robot: str | None = Field(
        None, description="Robot profile the policy was trained for (deploy/robots/<name>); null: the reacher env."
    )
    action_interface: Literal["effort", "velocity", "position"] = Field(
        "effort", description="What the output commands: joint torques, velocity or position targets."
    )
    joint_names: tuple[str, ...] = Field(description="Robot joint names in chain order.")
    control_hz: float = Field(description="Rate the policy must be run at.")
    action_low: tuple[float, ...] = Field(description="Lower action limits (torques, N·m), joint order.")
    action_high: tuple[float, ...] = Field(description="Upper action limits (torques, N·m), joint order.")
    discrete_action_torques: tuple[tuple[float, ...], ...] | None = Field(
        None, description="Torques of each discrete action index, or null for continuous actions."
    )
    observation_names: tuple[str, ...] = Field(description="The training observation layout, component by component.")
    symmetry_spec: dict[str, Any] = Field(description="The symmetry spec the policy was trained with.")
    strategy: str = Field(description="How the symmetry was imposed (none, dac-output, canonical, ...).")
    algorithm: str = Field(description="Training algorithm.")
    dataset_id: str = Field(description="Minari dataset id.")
    dataset_sha256: str = Field(description="Hash of the dataset's ingest config and source-bag hashes.")
    training_config_sha256: str = Field(description="Hash of the resolved training config.")
    member: int = Field(description="Which ensemble member (seed index) was exported.")
    seed: int = Field(description="The seed of that member.")
    opset: int = Field(description="ONNX opset.")
    parity: Parity | None = Field(None, description="Torch vs ONNX Runtime parity.")
    equivariance: Equivariance | None = Field(None, description="Equivariance error of the exported graph.")
    onnx_sha256: str = Field("", description="sha256 of policy.onnx (empty inside the ONNX file itself).")

    @model_validator(mode="after")
    def _one_observation_input(self) -> Contract:
        """The graph reads one ``observation`` input laid out as ``observation_names``, made of the signals."""
        expected = (OBSERVATION_INPUT, (None, len(self.observation_names)), "float32", self.observation_names)
        spec = self.inputs[0] if len(self.inputs) == 1 else None
        if spec is None or (spec.name, spec.shape, spec.dtype, spec.components) != expected:
            raise ValueError(
                f"inputs: expected one float32 {OBSERVATION_INPUT!r} input of components observation_names"
            )
        signalled = {f"{s.name}.{c}" for s in self.signals for c in s.components}
        unsignalled = [name for name in self.observation_names if name not in signalled]
        if unsignalled:
            raise ValueError(f"signals: no signal group holds observation components {unsignalled}")
        return self

    def sha256(self) -> str:
        """Hash of the canonical JSON form (what the gate's certificate binds)."""
        return sha256_json(self.model_dump(mode="json"))


def load_contract(model_dir: Path) -> Contract:
    """Read and verify a model folder: the contract parses and the ONNX file's sha256 matches it.

    Raises:
        ContractError: Missing files, an invalid contract, or an ONNX file whose bytes changed.
    """
    contract_path, onnx_path = model_dir / CONTRACT_FILE, model_dir / ONNX_FILE
    for path in (contract_path, onnx_path):
        if not path.is_file():
            raise ContractError(f"{path}: missing; not a symgate model folder")
    try:
        contract = Contract.model_validate_json(contract_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ContractError(f"{contract_path}: invalid contract: {error}") from error
    actual = sha256_file(onnx_path)
    if actual != contract.onnx_sha256:
        raise ContractError(
            f"{onnx_path}: sha256 {actual} does not match the contract's {contract.onnx_sha256}: the file was changed"
        )
    return contract
