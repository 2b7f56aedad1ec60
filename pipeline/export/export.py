"""``symgate export``: a finished training run → ``policy.onnx`` + ``contract.json``.

The graph takes one input, ``observation`` (float32, dynamic batch axis): every component of the
raw signal groups (``joint_position``, ``joint_velocity``, ``goal_position``) in the contract's
``observation_names`` order, which is the training order. At batch 1 ONNX Runtime pays per input
fed, so one input is cheaper than one per group. It returns ``joint_effort`` (clipped to the torque
limits) or ``action_index``. Everything between is inside the graph:
canonicalisation (for canonical policies), the forward-kinematics features,
normalisation, the deterministic policy head, action scaling and clipping. Before anything is
written, ONNX Runtime must reproduce torch on ≥ 10k states (max |Δ| ≤ 1e-5, or identical
discrete actions) and ``onnx.checker`` must pass; the numbers go into the contract.

Link-point Gaussian policies (``features: reach`` of any robot profile, and the paper's
``features: reacher``) are exported as the lean float32 graph of :mod:`pipeline.export.lean`
(10-21 nodes: Gemms, one Sin of every joint-angle class and, for chains past one block, one MatMul);
everything else traces :class:`ExportedPolicy`, the training modules in float64. The reference of
the parity check is :class:`ExportedPolicy` in float64 either way.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from numpy.typing import NDArray
from torch import Tensor, nn

from models.networks import GaussianTanhActor
from models.symmetry import BoundSymmetry
from pipeline import __version__
from pipeline.export.contract import (
    CONTRACT_FILE,
    METADATA_KEY,
    OBSERVATION_INPUT,
    ONNX_FILE,
    Contract,
    ContractError,
    Equivariance,
    Parity,
    TensorSpec,
)
from pipeline.export.lean import lean_policy
from pipeline.io import atomic_directory, atomic_write_json, sha256_file, sha256_json
from pipeline.train.buffer import OfflineData, load_offline_data
from pipeline.train.checkpoint import latest_checkpoint, load_checkpoint
from pipeline.train.common import Policy
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import CONFIG_FILE, SUMMARY_FILE, Agent, build_agent, member_generators
from sim.robot import load_robot_description
from sim.robots.env import env_urdf, robot_of
from sim.robots.profile import load_profile

OPSET = 18
PARITY_STATES = 10_000
PARITY_TOLERANCE = 1e-5
LOGGER = logging.getLogger(__name__)


class ParityError(ContractError):
    """ONNX Runtime's actions differ from torch's beyond ``PARITY_TOLERANCE`` (or a discrete action differs)."""


EQUIVARIANCE_STATES = 2_000


class ExportedPolicy(nn.Module):
    """Raw observation → action, with every preprocessing and postprocessing step inside.

    Args:
        agent: The trained run (its symmetry and canonicalisation).
        actor: One member of its actor.
        discrete: Return the action index instead of torques.
    """

    def __init__(self, agent: Agent, actor: Policy, discrete: bool) -> None:
        super().__init__()
        self.agent, self.actor, self.discrete = agent, actor, discrete
        self.low: Tensor
        self.high: Tensor
        if not discrete:
            assert isinstance(actor, GaussianTanhActor)
            self.register_buffer("low", torch.as_tensor(actor.action_low).detach().clone())
            self.register_buffer("high", torch.as_tensor(actor.action_high).detach().clone())

    def forward(self, observation: Tensor) -> Tensor:
        """``(B, D)`` float32 raw observations → ``(B, A)`` float32 torques or ``(B,)`` action indices.

        It computes in float64 inside: it is the parity reference of every export, and the traced graph of
        the policies the lean float32 graph does not cover (``pipeline.export.lean``).
        """
        action = self.agent.act(observation.double()[None], self.actor)[0]
        if self.discrete:
            return action
        return torch.clamp(action, self.low, self.high).float()


def _signal_groups(names: tuple[str, ...]) -> list[tuple[str, list[int]]]:
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        groups.setdefault(name.split(".", 1)[0], []).append(index)
    return list(groups.items())


def _load_run(run_dir: Path) -> tuple[TrainConfig, str | list[str], str]:
    """The run's config, dataset id (or per-member ids) and config hash; the run must have finished."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise ContractError(f"{run_dir}: not a training run (no {CONFIG_FILE})")
    resolved = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    dataset_id, config_sha = resolved.pop("dataset"), resolved.pop("config_sha256")
    config = TrainConfig.model_validate(resolved)
    latest = latest_checkpoint(run_dir / "checkpoints")
    step = int(latest.name.removeprefix("step_")) if latest is not None else 0
    if not (run_dir / SUMMARY_FILE).is_file() or step != config.steps:
        raise ContractError(f"{run_dir}: the run has not finished (checkpoint step {step} of {config.steps})")
    return config, dataset_id, config_sha


def _joint_ranges(data: OfflineData) -> dict[str, tuple[float, float]]:
    """Position range per joint for random states: continuous joints on [-π, π), others within their limits.

    The joints are those of the arm the dataset's eval env simulates: its robot profile's, or its URDF's.
    """
    spec = data.metadata["eval_env_spec"]
    robot_name = robot_of(spec)
    if robot_name is not None:
        limits = load_profile(robot_name).limits
        return {lim.name: (-math.pi, math.pi) if lim.continuous else (lim.lower, lim.upper) for lim in limits}
    robot = load_robot_description(env_urdf(spec))
    return {j.name: (-math.pi, math.pi) if j.continuous else (j.lower, j.upper) for j in robot.joints}


def _random_states(data: OfflineData, count: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """Plausible raw observations beyond the data: any joint angles, velocities, goal bearings."""
    names = data.observation_names
    ranges = _joint_ranges(data)
    states = np.zeros((count, len(names)), dtype=np.float32)
    bearing = rng.uniform(-math.pi, math.pi, count)
    distance = float(
        np.linalg.norm(data.observations[0, [names.index("goal_position.x"), names.index("goal_position.y")]].cpu())
    )
    for i, name in enumerate(names):
        field, component = name.split(".", 1)
        if field == "joint_position":
            states[:, i] = rng.uniform(*ranges[component], count)
        elif field == "joint_velocity":
            states[:, i] = rng.normal(0.0, 3.0, count)
        elif name == "goal_position.x":
            states[:, i] = distance * np.cos(bearing)
        elif name == "goal_position.y":
            states[:, i] = distance * np.sin(bearing)
        elif name == "goal_position.z":
            states[:, i] = float(data.observations[0, i].cpu())
    return states


@dataclass
class LoadedPolicy:
    """A finished run's policy as the exporter sees it, with what the contract needs."""

    policy: ExportedPolicy
    agent: Agent
    data: OfflineData
    config: TrainConfig
    groups: list[tuple[str, list[int]]]
    dataset_id: str
    config_sha256: str


def load_policy(run_dir: Path, member: int = 0) -> LoadedPolicy:
    """Rebuild one member of a finished run as the torch module that is exported.

    Raises:
        ContractError: Unfinished run, unknown member, non-finite weights.
        CheckpointError: Corrupt checkpoint.
    """
    config, dataset_id, config_sha = _load_run(run_dir)
    if not 0 <= member < config.seeds:
        raise ContractError(f"--seed {member}: the run trained seeds 0..{config.seeds - 1}")
    device = torch.device("cpu")
    data = load_offline_data(dataset_id, device, config.gamma)
    generators = member_generators(config)
    agent = build_agent(config, data, generators, device)
    latest = latest_checkpoint(run_dir / "checkpoints")
    assert latest is not None  # _load_run checked it
    load_checkpoint(latest, agent.algorithm.modules, agent.algorithm.optimizers, generators)
    for name, tensor in agent.actor.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ContractError(f"{latest}: actor weight {name} holds NaN/inf; refusing to export it")
    actor = agent.actor.select_members([member]).double().eval()
    groups = _signal_groups(data.observation_names)
    policy = ExportedPolicy(agent, actor, data.discrete).double().eval()
    trained_on = data.dataset_ids[member] if data.member_slices is not None else data.dataset_id
    return LoadedPolicy(policy, agent, data, config, groups, trained_on, config_sha)


def export_run(run_dir: Path, out: Path, *, member: int = 0, overwrite: bool = False) -> Contract:
    """Export one member of a finished run; nothing is written unless every check passes.

    Args:
        run_dir: A finished ``symgate train`` run.
        out: Model folder to create (``policy.onnx`` + ``contract.json``).
        member: Which seed of a vectorised run to export.
        overwrite: Replace an existing model folder.

    Raises:
        ContractError: Unfinished run, non-finite weights, failed parity or ONNX check.
        CheckpointError: Corrupt checkpoint.
    """
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists; refusing to overwrite it")
    loaded = load_policy(run_dir, member)
    policy, data, agent, config, groups = loaded.policy, loaded.data, loaded.agent, loaded.config, loaded.groups
    dataset_id, config_sha = loaded.dataset_id, loaded.config_sha256

    meta = data.metadata["symgate"]
    units = meta["observation_units"]
    action_units = next(iter(meta["action_units"].values()))
    signals = tuple(
        TensorSpec(
            name=name,
            shape=(None, len(indices)),
            dtype="float32",
            components=tuple(data.observation_names[i].split(".", 1)[1] for i in indices),
            unit=units.get(name, ""),
        )
        for name, indices in groups
    )
    action_field = data.action_names[0].split(".", 1)[0]
    output = (
        TensorSpec(name="action_index", shape=(None,), dtype="int64", components=(), unit="index")
        if data.discrete
        else TensorSpec(
            name=action_field,
            shape=(None, len(data.action_names)),
            dtype="float32",
            components=tuple(n.split(".", 1)[1] for n in data.action_names),
            unit=action_units,
        )
    )
    dataset_sha = sha256_json({"ingest": meta["ingest_config_sha256"], "bags": meta["source_bags"]})
    robot = load_profile(config.robot) if config.robot is not None else None
    spec = (
        robot.symmetry_spec()
        if robot is not None
        else yaml.safe_load(config.augmentation.spec.read_text(encoding="utf-8"))
    )
    observation = TensorSpec(
        name=OBSERVATION_INPUT,
        shape=(None, len(data.observation_names)),
        dtype="float32",
        components=data.observation_names,
        unit="",
    )
    contract = Contract(
        symgate_version=__version__,
        inputs=(observation,),
        signals=signals,
        outputs=(output,),
        robot=config.robot,
        action_interface=robot.profile.action.interface if robot is not None else "effort",
        joint_names=tuple(meta["joint_names"]),
        control_hz=float(meta["control_hz"]),
        action_low=tuple(float(x) for x in data.action_low.tolist()),
        action_high=tuple(float(x) for x in data.action_high.tolist()),
        discrete_action_torques=None
        if data.discrete_torques is None
        else tuple(tuple(float(x) for x in row) for row in data.discrete_torques),
        observation_names=data.observation_names,
        symmetry_spec=spec,
        strategy=config.augmentation.strategy,
        algorithm=config.algorithm,
        dataset_id=dataset_id,
        dataset_sha256=dataset_sha,
        training_config_sha256=config_sha,
        member=member,
        seed=config.seed + member,
        opset=OPSET,
    )

    dataset_states = data.observations.cpu().numpy()
    random_states = _random_states(data, max(PARITY_STATES - len(dataset_states), 1000), np.random.default_rng(0))
    states = np.concatenate([dataset_states, random_states])
    lean = lean_policy(policy.actor, agent.symmetry, agent.canonical_actor, groups)
    if lean is not None:
        try:
            return write_model(
                lean, contract, states, agent.symmetry, out, overwrite=overwrite, source=str(run_dir), reference=policy
            )
        except ParityError as error:  # float32 rounding past the tolerance: the float64 graph still holds it
            LOGGER.warning("%s; exporting the float64 graph instead", error)
    return write_model(policy, contract, states, agent.symmetry, out, overwrite=overwrite, source=str(run_dir))


def write_model(
    policy: nn.Module,
    contract: Contract,
    states: NDArray[np.float32],
    symmetry: BoundSymmetry,
    out: Path,
    *,
    overwrite: bool = False,
    source: str = "policy",
    reference: nn.Module | None = None,
) -> Contract:
    """Export a torch policy over raw observations to ``out`` (``policy.onnx`` + ``contract.json``).

    The graph is checked with ``onnx.checker``, ONNX Runtime must reproduce ``policy`` on ``states``
    and the graph's equivariance error under ``symmetry`` is measured; both go into the contract.
    Nothing is written unless every check passes.

    Args:
        policy: ``forward(observation)``: ``(B, D)``, observation_names order → ``(B, A)`` torques or ``(B,)`` indices.
        contract: The contract to complete (parity, equivariance and the ONNX hash are filled in).
        states: Raw observations (contract.observation_names order) for the parity check.
        symmetry: The task's symmetry, bound to the observation names.
        out: Model folder to create.
        overwrite: Replace an existing model folder.
        source: What is exported, for error messages.
        reference: What ONNX Runtime must reproduce, when ``policy`` is a lean rewrite of it (default: ``policy``).

    Raises:
        ContractError: The graph fails the checker, returns NaN/inf, or disagrees with torch.
    """
    import onnx
    import onnxruntime as ort

    discrete = contract.discrete_action_torques is not None
    output = contract.outputs[0]
    with tempfile.TemporaryDirectory(prefix="symgate-export-") as scratch:
        path = Path(scratch) / ONNX_FILE
        example = (torch.zeros(2, len(contract.observation_names)),)
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # The exporter narrates on stdout.
            warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)  # torch's own internals
            logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # no torchvision
            torch.onnx.export(
                policy,
                example,
                str(path),
                input_names=[OBSERVATION_INPUT],
                output_names=[output.name],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        model = onnx.load(str(path))
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, contract.model_dump_json()
        onnx.save_model(model, str(path))
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except onnx.checker.ValidationError as error:
            raise ContractError(f"{source}: the exported graph fails onnx.checker: {error}") from error
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        onnx_actions = session.run(None, {OBSERVATION_INPUT: states})[0]
        with torch.no_grad():
            torch_actions = (reference if reference is not None else policy)(torch.as_tensor(states)).numpy()
        parity = _parity(torch_actions, onnx_actions, discrete)
        if not np.isfinite(torch_actions).all():
            raise ContractError(
                f"{source}: the policy returns NaN/inf on {int((~np.isfinite(torch_actions)).sum())} values"
            )
        if parity.max_abs_diff > PARITY_TOLERANCE or parity.argmax_agreement < 1.0:
            raise ParityError(f"{source}: ONNX Runtime disagrees with torch: {parity.model_dump()}")
        equivariance = _equivariance(symmetry, session, states, discrete, np.random.default_rng(0))
        final = contract.model_copy(update={"parity": parity, "equivariance": equivariance})
        with atomic_directory(out, overwrite=overwrite) as staging:
            (staging / ONNX_FILE).write_bytes(path.read_bytes())
            final = final.model_copy(update={"onnx_sha256": sha256_file(staging / ONNX_FILE)})
            atomic_write_json(staging / CONTRACT_FILE, final.model_dump(mode="json"))
    return final


def _parity(torch_actions: NDArray[Any], onnx_actions: NDArray[Any], discrete: bool) -> Parity:
    if discrete:
        agreement = float((torch_actions == onnx_actions).mean())
        return Parity(states=len(torch_actions), max_abs_diff=0.0, argmax_agreement=agreement)
    diff = float(np.abs(torch_actions.astype(np.float64) - onnx_actions.astype(np.float64)).max())
    return Parity(states=len(torch_actions), max_abs_diff=diff, argmax_agreement=1.0)


def _equivariance(
    symmetry: BoundSymmetry,
    session: Any,
    states: NDArray[np.float32],
    discrete: bool,
    rng: np.random.Generator,
) -> Equivariance:
    """‖π(g·o) - g·π(o)‖ of the ONNX graph itself, g uniform on SO(2) (mirror drawn if the group has it)."""
    picked = states[rng.choice(len(states), size=min(EQUIVARIANCE_STATES, len(states)), replace=False)]
    angle = rng.uniform(-math.pi, math.pi, len(picked))
    mirror = rng.random(len(picked)) < 0.5 if symmetry.has_mirror else np.zeros(len(picked), dtype=bool)
    moved = symmetry.act_observation_np(picked, angle, mirror).astype(np.float32)
    action = session.run(None, {OBSERVATION_INPUT: picked})[0]
    action_moved = session.run(None, {OBSERVATION_INPUT: moved})[0]
    errors: NDArray[np.float64]
    if discrete:
        errors = (symmetry.act_discrete_action_np(action, angle, mirror) != action_moved).astype(np.float64)
    else:
        errors = np.linalg.norm(action_moved - symmetry.act_action_np(action, angle, mirror), axis=-1)
    return Equivariance(states=len(picked), mean_error=float(errors.mean()), max_error=float(errors.max()))
