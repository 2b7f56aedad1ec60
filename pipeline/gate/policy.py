"""The deployed artefact as the gate runs it: the ONNX graph in ONNX Runtime, fed raw env signals by name.

Nothing here imports torch: the gate exercises exactly what the robot will load (``policy.onnx``
and its ``contract.json``), and the contract is checked against the simulated robot first, so a
model built for another arm, another joint order or another control rate fails with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.export.contract import OBSERVATION_INPUT, ONNX_FILE, Contract
from sim.robots.interface import SimulatedArm

CUDA_PROVIDER = "CUDAExecutionProvider"


def providers() -> list[str]:
    """ONNX Runtime execution providers: CUDA first when this onnxruntime build has it, CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in (CUDA_PROVIDER, "CPUExecutionProvider") if p in available]


def open_session(model_dir: Path, threads: int = 1) -> Any:
    """An ONNX Runtime session for ``model_dir/policy.onnx`` (``threads`` intra-op threads, as on the robot)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_dir / ONNX_FILE), options, providers=providers())


def contract_mismatches(contract: Contract, env: SimulatedArm) -> list[str]:
    """Every way the contract disagrees with the simulated robot; empty when the model fits it.

    Checks the robot profile, the joint names and their order, the action interface, the control
    rate, each input's components against the env's named observation, and the action: type,
    field, joints, limits or discrete command table.
    """
    problems: list[str] = []
    robot, trained_for = env.robot_name, contract.robot
    if trained_for is None and robot is not None:
        problems.append(f"robot: the contract is for the built-in reacher, the env is robot {robot!r}")
    elif trained_for is not None and robot is None:
        problems.append(f"robot: the contract is for robot {trained_for!r}, the env is the built-in reacher")
    elif trained_for is not None and trained_for != robot and Path(trained_for).stem != robot:
        problems.append(f"robot: contract {trained_for!r}, env {robot!r}")
    joints = tuple(env.joint_names)
    if contract.joint_names != joints:
        problems.append(f"joint_names: contract {list(contract.joint_names)}, robot {list(joints)}")
    if contract.action_interface != env.action_interface:
        problems.append(f"action_interface: contract {contract.action_interface}, robot {env.action_interface}")
    if contract.control_hz != env.control_hz:
        problems.append(f"control_hz: contract {contract.control_hz:g} Hz, robot {env.control_hz} Hz")
    problems += _input_mismatches(contract, env.observation_names)
    if len(contract.outputs) != 1:
        return [*problems, f"outputs: expected one action output, got {[o.name for o in contract.outputs]}"]
    output, table = contract.outputs[0], env.discrete_actions
    field = env.action_names[0].split(".", 1)[0]
    if table is not None:
        if contract.discrete_action_torques is None or output.dtype != "int64":
            problems.append(f"output {output.name}: the env takes discrete action indices, the model emits {field}")
        elif not np.allclose(contract.discrete_action_torques, table):
            problems.append("discrete_action_torques: the model's command table differs from the env's")
        return problems
    if contract.discrete_action_torques is not None or output.dtype != "float32":
        return [*problems, f"output {output.name}: the env takes {field}, the model emits discrete action indices"]
    if output.name != field or output.components != joints or output.shape != (None, len(joints)):
        problems.append(f"output {output.name}{list(output.components)}: the robot takes {field}{list(joints)}")
    low, high = env.action_bounds
    if not (_close(contract.action_low, low) and _close(contract.action_high, high)):
        problems.append(
            f"action limits: contract [{list(contract.action_low)}, {list(contract.action_high)}], "
            f"robot [{low.tolist()}, {high.tolist()}]"
        )
    return problems


def _close(a: Sequence[float] | NDArray[np.float64], b: NDArray[np.float64]) -> bool:
    """Same length and equal within float tolerance."""
    return len(a) == len(b) and bool(np.allclose(a, b))


def _input_mismatches(contract: Contract, observation_names: tuple[str, ...]) -> list[str]:
    missing = [name for name in contract.observation_names if name not in observation_names]
    if missing:
        return [f"input {OBSERVATION_INPUT}: the env observes no {missing}; it has {list(observation_names)}"]
    return []


def graph_mismatches(contract: Contract, session: Any) -> list[str]:
    """Differences between the graph's actual inputs/outputs and the ones the contract declares."""
    declared = [(s.name, list(s.shape[1:])) for s in contract.inputs]
    actual = [(i.name, list(i.shape[1:])) for i in session.get_inputs()]
    problems = [] if declared == actual else [f"graph inputs {actual} differ from the contract's {declared}"]
    outputs = [o.name for o in session.get_outputs()]
    if outputs != [o.name for o in contract.outputs]:
        problems.append(f"graph outputs {outputs} differ from the contract's {[o.name for o in contract.outputs]}")
    return problems


class OnnxPolicy:
    """Batched env observations → actions through the ONNX graph, its input assembled by component name.

    Args:
        session: An ONNX Runtime session of the model.
        contract: Its contract (checked against the env with :func:`contract_mismatches` first).
        observation_names: The env's observation component names.
    """

    def __init__(self, session: Any, contract: Contract, observation_names: tuple[str, ...]) -> None:
        self.session = session
        self.output = contract.outputs[0].name
        order = [observation_names.index(name) for name in contract.observation_names]
        self.order = None if order == list(range(len(observation_names))) else order  # None: the env's own order

    def __call__(self, observations: NDArray[np.float32]) -> NDArray[Any]:
        """``(N, D)`` raw observations (the env's order) → ``(N, A)`` torques or ``(N,)`` action indices."""
        ordered = observations if self.order is None else observations[:, self.order]
        feeds = {OBSERVATION_INPUT: np.ascontiguousarray(ordered, dtype=np.float32)}
        actions: NDArray[Any] = self.session.run([self.output], feeds)[0]
        return actions
