"""Model folders that the gate and robot-node tests serve, all made through the real export path.

- :func:`export_expert`: ``sim.behaviour.ExpertPolicy`` written as a torch module and exported
  through the same ``write_model`` path as trained policies, with the contract of a real trained
  model of the same robot. It reaches every held-out rotation: what the gate must pass and the
  robot node must drive to the goal.
- :func:`replace_with_nan_graph`: a graph with the contract's input and output whose torques are
  ``joint_velocity / 0`` (NaN at rest, inf when moving), re-hashed into the contract.
- :func:`forge_certificate`: issue 15's attack on a failed model folder: a certified model's
  certificate and signature, re-bound to the failed model's files with every hash recomputed.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper
from torch import Tensor, nn

from models.symmetry import SymmetrySpec, wrap_angle
from pipeline.export import CONTRACT_FILE, ONNX_FILE, Contract
from pipeline.export.export import write_model
from pipeline.gate import CERTIFICATE_FILE, REPORT_JSON
from pipeline.gate.signing import SIGNATURE_FILE
from pipeline.io import sha256_file, sha256_json
from sim.behaviour import BehaviourConfig
from sim.robot import load_robot_description


class TorchExpert(nn.Module):
    """``sim.behaviour.ExpertPolicy`` in torch: IK to the goal, PD on the wrapped joint error, clipped."""

    def __init__(self, observation_names: tuple[str, ...]) -> None:
        super().__init__()
        robot, gains = load_robot_description(), BehaviourConfig()
        (self.l1, self.l2), self.kp, self.kd = robot.link_lengths, gains.kp, gains.kd
        self.tau = float(robot.effort_limits[0])
        self.columns = {
            group: [i for i, name in enumerate(observation_names) if name.startswith(f"{group}.")]
            for group in ("joint_position", "joint_velocity", "goal_position")
        }

    def forward(self, observation: Tensor) -> Tensor:
        """The contract's ``observation`` (joint positions, velocities and the goal, by name) → torques.

        Computed in float64 like exported policies; ONNX Runtime has no float64 Atan, so angles come from
        :func:`_atan2`.
        """
        q, v, goal = (observation[:, columns].double() for columns in self.columns.values())
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


def export_expert(trained: Contract, out: Path) -> Contract:
    """Export the expert to ``out`` with ``trained``'s contract (same robot, inputs and dataset)."""
    contract = Contract.model_validate(
        {**trained.model_dump(), "strategy": "ik-pd-expert", "algorithm": "none", "parity": None, "equivariance": None}
    )
    names = contract.observation_names
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
    return write_model(TorchExpert(names).eval(), contract, states, symmetry, out, source="IK+PD expert")


def rewrite_onnx(model: Path, onnx_bytes: bytes) -> None:
    """Replace policy.onnx and re-hash it in the contract, as a careless rebuild would."""
    (model / ONNX_FILE).write_bytes(onnx_bytes)
    contract = json.loads((model / CONTRACT_FILE).read_text())
    contract["onnx_sha256"] = sha256_file(model / ONNX_FILE)
    (model / CONTRACT_FILE).write_text(json.dumps(contract))


def replace_with_nan_graph(model: Path) -> None:
    """Turn ``model`` into one whose graph returns ``joint_velocity / 0`` (valid I/O, non-finite torques)."""
    names = json.loads((model / CONTRACT_FILE).read_text())["observation_names"]
    velocity = [i for i, name in enumerate(names) if name.startswith("joint_velocity.")]
    inputs = [helper.make_tensor_value_info("observation", TensorProto.FLOAT, ["batch", len(names)])]
    output = helper.make_tensor_value_info("joint_effort", TensorProto.FLOAT, ["batch", len(velocity)])
    columns = helper.make_tensor("velocity_columns", TensorProto.INT64, [len(velocity)], velocity)
    nodes = [
        helper.make_node("Gather", ["observation", "velocity_columns"], ["joint_velocity"], axis=1),
        helper.make_node("Sub", ["joint_velocity", "joint_velocity"], ["zero"]),
        helper.make_node("Div", ["joint_velocity", "zero"], ["joint_effort"]),
    ]
    graph = helper.make_graph(nodes, "nan_policy", inputs, [output], initializer=[columns])
    rewrite_onnx(
        model, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10).SerializeToString()
    )


def forge_certificate(failed: Path, certified: Path) -> None:
    """Forge ``failed``'s certificate as an attacker with write access to the folder can, with only hashlib/json.

    The certified model's certificate gets the failed model's ONNX, contract and report hashes (its
    report's verdict edited to ``pass`` first), and its id recomputed; the certified model's
    signature is copied beside it (the only valid signature the attacker has).
    """
    report = json.loads((failed / REPORT_JSON).read_text())
    report["verdict"], report["reasons"] = "pass", []
    (failed / REPORT_JSON).write_text(json.dumps(report))
    certificate = json.loads((certified / CERTIFICATE_FILE).read_text())
    certificate["onnx_sha256"] = sha256_file(failed / ONNX_FILE)
    certificate["contract_sha256"] = sha256_json(json.loads((failed / CONTRACT_FILE).read_text()))
    certificate["report_sha256"] = sha256_file(failed / REPORT_JSON)
    certificate["gate_config_sha256"] = report["gate_config_sha256"]
    bindings = {key: value for key, value in certificate.items() if key != "certificate_id"}
    certificate["certificate_id"] = sha256_json(bindings)
    (failed / CERTIFICATE_FILE).write_text(json.dumps(certificate))
    shutil.copy(certified / SIGNATURE_FILE, failed / SIGNATURE_FILE)
