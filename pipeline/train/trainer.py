"""``symgate train``: builds the networks, runs the update loop, logs, checkpoints and resumes.

The loop never synchronises with the host between log points: losses are accumulated on the
device, and the first step at which any loss was NaN/inf is tracked there too, so a diverged run
stops with the loss name and the exact step. Every E members (seeds) are one vectorised model;
member i draws its initial weights, minibatches, group elements and noise from its own generator
seeded with ``seed + i``, so member i of an E-seed run is the single-seed run with that seed.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import ValidationError
from torch import Tensor

from models.features import FeatureExtractor, GenericFeatures, Normalizer, ObservationEncoder, ReacherFeatures
from models.kinematics import ReachFeatures
from models.networks import CategoricalActor, DiscreteTwinQ, GaussianTanhActor, TwinQ, ValueNet
from models.symmetry import BoundSymmetry, GroupElement, SymmetrySpec, SymmetrySpecError
from pipeline.io import ConfigError, UserInputError, atomic_write_json, atomic_write_text, load_config
from pipeline.train.augment import Augmenter
from pipeline.train.bc import BC
from pipeline.train.buffer import OfflineData, load_offline_data
from pipeline.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from pipeline.train.common import Policy, twin_q
from pipeline.train.config import TrainConfig
from pipeline.train.cql import CQL, DiscreteCQL, shared_network_augmentation
from pipeline.train.evaluate import evaluation_angles, rollout
from pipeline.train.iql import IQL
from sim.robot import RobotDescriptionError, load_robot_description
from sim.robots.env import env_urdf, robot_of
from sim.robots.profile import Robot, load_profile

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or inf; the message names the loss and the step."""


class RunDirError(UserInputError):
    """The run folder belongs to another run (different config or dataset)."""


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but torch sees no CUDA device")
    return torch.device(name)


@dataclass
class Agent:
    """The networks of one run and how to query the policy and critics symmetry-aware."""

    algorithm: IQL | CQL | DiscreteCQL | BC
    augmenter: Augmenter | None
    symmetry: BoundSymmetry
    discrete: bool

    @property
    def actor(self) -> Policy:
        """The policy, an actor or discrete CQL's greedy Q (export: canonicalise inputs first if canonical_actor)."""
        return self.algorithm.actor

    @property
    def canonical_actor(self) -> bool:
        """Whether the actor was trained on canonicalised inputs."""
        return self.augmenter is not None and self.augmenter.canonical and self.augmenter.actor

    @property
    def canonical_critic(self) -> bool:
        """Whether the critics were trained on canonicalised inputs."""
        return self.augmenter is not None and self.augmenter.canonical and self.augmenter.critic

    def act(self, observations: Tensor, actor: Policy | None = None) -> Tensor:
        """Deterministic actions for ``(E, B, D)`` observations, in the original frame.

        Args:
            observations: Raw observations.
            actor: Another actor trained the same way (e.g. one member selected for export); default: this run's.
        """
        actor = actor if actor is not None else self.actor
        if not self.canonical_actor:
            return actor.deterministic(observations)
        assert self.augmenter is not None
        g = self.augmenter.canonical_element(observations)
        action = actor.deterministic(self.symmetry.act_observation(observations, g))
        return self.augmenter.act_actions(action, self.symmetry.invert(g))

    def q(self, observations: Tensor, actions: Tensor) -> Tensor:
        """Minimum of the twin online critics, ``(E, B)``, in the original frame."""
        if self.canonical_critic:
            assert self.augmenter is not None
            g = self.augmenter.canonical_element(observations)
            observations, actions = (
                self.symmetry.act_observation(observations, g),
                self.augmenter.act_actions(actions, g),
            )
        assert not isinstance(self.algorithm, BC), "behaviour cloning has no critic"
        return twin_q(self.algorithm.critic, observations, actions).min(dim=0).values


def _dataset_robot(config: TrainConfig, data: OfflineData) -> Robot | None:
    """The config's robot profile, checked against the one the dataset names (None for reacher datasets)."""
    named = robot_of(data.metadata["eval_env_spec"])
    if config.robot is None:
        if named is not None:
            raise ConfigError(f"dataset {data.dataset_id} comes from robot {named!r}: train it with robot: {named}")
        return None
    robot = load_profile(config.robot)
    if named is None or load_profile(named).source != robot.source:
        raise ConfigError(
            f"robot {config.robot!r}: dataset {data.dataset_id} was recorded with {named or 'the reacher env'}"
        )
    return robot


def build_agent(
    config: TrainConfig, data: OfflineData, generators: list[torch.Generator], device: torch.device
) -> Agent:
    """Encoder (fitted on the dataset), actor, critics and the symmetry, all on ``device``."""
    robot = _dataset_robot(config, data)
    source = f"robot {config.robot!r}" if robot is not None else str(config.augmentation.spec)
    try:
        spec = (
            SymmetrySpec.model_validate(robot.symmetry_spec())
            if robot is not None
            else load_config(config.augmentation.spec, SymmetrySpec)
        )
        symmetry = spec.bind(data.observation_names, data.action_names, data.discrete_torques)
    except (SymmetrySpecError, ValidationError) as error:
        raise ConfigError(f"{source}: symmetry spec does not fit dataset {data.dataset_id}: {error}") from error
    features: FeatureExtractor
    if config.features == "reach":
        assert robot is not None  # TrainConfig requires robot for reach features
        features = ReachFeatures.from_robot(robot, data.observation_names)
    elif config.features == "reacher":
        try:  # the dataset's own planar arm, as its eval env simulates it
            arm = load_robot_description(env_urdf(data.metadata["eval_env_spec"]))
            features = ReacherFeatures.from_robot(arm, data.observation_names)
        except RobotDescriptionError as error:
            raise ConfigError(f"features: reacher needs a planar 2-link arm: {error}") from error
    else:
        continuous = [n for n in data.observation_names if n.startswith("joint_position.")]
        features = GenericFeatures(data.observation_names, continuous)
    # A std floor of 1e-2 (features are metres and rad/s of order 1): features constant by construction
    # (the canonical frame fixes the goal) must not amplify float round-off.
    encoder = ObservationEncoder(features, Normalizer(features.out_features, min_std=1e-2))
    augmentation = config.augmentation
    if data.discrete and config.algorithm == "cql":  # the greedy policy and its critic are one network
        augmentation = shared_network_augmentation(augmentation)
    augmenter = Augmenter(augmentation, symmetry, data.discrete) if augmentation.strategy != "none" else None
    # Normalisation statistics come from the data and its training-subgroup orbit, for every strategy alike:
    # data from one context has a constant goal, and a std floored at ~0 would blow rotated inputs up.
    observations = data.observations
    if augmenter is not None and augmenter.canonical:
        observations = symmetry.act_observation(observations, augmenter.canonical_element(observations))
    else:
        orbit_rng = torch.Generator().manual_seed(0)  # the same statistics for every seed
        g = symmetry.sample((len(observations),), orbit_rng)
        moved = symmetry.act_observation(observations, GroupElement(g.angle.to(device), g.mirror.to(device)))
        observations = torch.cat([observations, moved])
    with warnings.catch_warnings():
        if augmenter is not None and augmenter.canonical:  # the canonical frame fixes the goal: constant by design
            warnings.filterwarnings("ignore", message="features .* are constant", category=UserWarning)
        encoder.fit(observations)
    encoder.to(device)
    members, hidden = config.seeds, list(config.hidden)
    n_actions = len(data.discrete_torques) if data.discrete_torques is not None else 0
    algorithm: IQL | CQL | DiscreteCQL | BC
    if data.discrete and config.algorithm == "cql":  # CQL-DQN: no actor, the policy is the critic's argmax
        algorithm = DiscreteCQL(
            config, DiscreteTwinQ(members, encoder, n_actions, hidden, generators).to(device), augmenter
        )
        return Agent(algorithm, augmenter, symmetry, data.discrete)
    actor: GaussianTanhActor | CategoricalActor
    critic: TwinQ | DiscreteTwinQ
    if data.discrete:
        actor = CategoricalActor(members, encoder, n_actions, hidden, generators)
        critic = DiscreteTwinQ(members, encoder, n_actions, hidden, generators)
    else:
        actor = GaussianTanhActor(
            members, encoder, data.action_low, data.action_high, hidden, generators, likelihood=config.actor_likelihood
        )
        critic = TwinQ(members, encoder, len(data.action_names), hidden, generators)
    actor.to(device), critic.to(device)
    if config.algorithm == "iql":
        algorithm = IQL(config, actor, critic, ValueNet(members, encoder, hidden, generators).to(device), augmenter)
    elif config.algorithm == "cql":
        assert isinstance(actor, GaussianTanhActor)
        algorithm = CQL(config, actor, critic, augmenter, generators)
    else:
        algorithm = BC(config, actor, augmenter)
    return Agent(algorithm, augmenter, symmetry, data.discrete)


@dataclass
class MetricStates:
    """A fixed sample of dataset transitions and full-SO(2) group elements for the symmetry metrics."""

    observations: Tensor  # (1, M, D), broadcast over members
    actions: Tensor
    returns_to_go: Tensor
    g: GroupElement


@torch.no_grad()
def symmetry_metrics(agent: Agent, states: MetricStates, members: int) -> dict[str, Tensor]:
    """Equivariance error of the policy and invariance error of Q under full-SO(2) rotations; pessimism.

    - ``equivariance_error``: E‖π(g·o) - g·π(o)‖ (continuous) or P[argmax π(g·o) ≠ g·argmax π(o)] (discrete),
      with g uniform on SO(2) — mostly rotations the C4 augmentation never showed.
    - ``q_invariance_error``: E|Q(g·o, g·a) - Q(o, a)| on dataset actions.
    - ``pessimism``: E[Q(s, a) - G(s, a)] on dataset pairs, G the discounted return-to-go in the data
      (negative: pessimistic).
    """
    o = states.observations.expand(members, *states.observations.shape[1:])
    a = states.actions.expand(members, *states.actions.shape[1:])
    g = GroupElement(angle=states.g.angle.expand(members, -1), mirror=states.g.mirror.expand(members, -1))
    moved = agent.symmetry.act_observation(o, g)
    act_actions = agent.symmetry.act_discrete_action if agent.discrete else agent.symmetry.act_action
    expected = act_actions(agent.act(o), g)
    got = agent.act(moved)
    if agent.discrete:
        equivariance = (got != expected).float().mean(dim=1)
    else:
        equivariance = torch.linalg.vector_norm(got - expected, dim=-1).mean(dim=1)
    metrics = {"equivariance_error": equivariance}
    if not isinstance(agent.algorithm, BC):
        q = agent.q(o, a)
        metrics["q_invariance_error"] = (agent.q(moved, act_actions(a, g)) - q).abs().mean(dim=1)
        metrics["pessimism"] = (q - states.returns_to_go).mean(dim=1)
    return metrics


def member_generators(config: TrainConfig) -> list[torch.Generator]:
    """One generator per member, seeded ``seed + i``: member i's weights, minibatches and noise."""
    return [torch.Generator().manual_seed(config.seed + i) for i in range(config.seeds)]


def _prepare_run_dir(out: Path, config: TrainConfig, dataset_id: str | list[str]) -> None:
    resolved = {"dataset": dataset_id, "config_sha256": config.sha256(), **config.model_dump(mode="json")}
    path = out / CONFIG_FILE
    if path.exists():
        saved = yaml.safe_load(path.read_text())
        if saved != resolved:
            raise RunDirError(f"{out}: holds a run with another config or dataset; use a new --out to start a new run")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(resolved, sort_keys=False))


def train(
    config: TrainConfig,
    dataset_id: str | Sequence[str],
    out: Path,
    *,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run in ``out``; returns the summary that is also written to ``summary.json``.

    Args:
        config: The training config.
        dataset_id: Minari dataset id, or one id per member (``config.seeds`` of them): member i then
            trains on dataset i only (a fresh dataset per seed).
        out: Run folder. If it holds a checkpoint of the same config, training resumes from it.
        on_progress: Called at every log point with the step and the logged scalars.

    Raises:
        TrainingDivergedError: A loss became NaN/inf (message: loss name and step).
        RunDirError: ``out`` belongs to another run.
        ConfigError: Per-member datasets whose count is not ``config.seeds``.
    """
    if not isinstance(dataset_id, str) and len(dataset_id) != config.seeds:
        raise ConfigError(f"seeds: {config.seeds} members but {len(dataset_id)} per-member datasets")
    device = resolve_device(config.device)
    # Denormal floats late in training can slow CPU maths down 2x; the flag is process-global, so it is reset below.
    flushing = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        return _train(config, dataset_id, out, device, on_progress)
    finally:
        if flushing:
            torch.set_flush_denormal(False)


def _train(
    config: TrainConfig,
    dataset_id: str | Sequence[str],
    out: Path,
    device: torch.device,
    on_progress: Callable[[int, dict[str, float]], None] | None,
) -> dict[str, Any]:
    dataset_id = dataset_id if isinstance(dataset_id, str) else list(dataset_id)
    data = load_offline_data(dataset_id, device, config.gamma)
    if (
        data.metadata["symgate"].get("reward_rule") == "none"
        and config.algorithm != "bc"
        and not config.allow_no_reward
    ):
        raise ConfigError(
            f"dataset {data.dataset_id} was ingested with reward rule none (no task signal: every reward is 0); "
            f"{config.algorithm} learns values from rewards: use algorithm bc, or set allow_no_reward=true"
        )
    generators = member_generators(config)  # initial weights, minibatches, group elements: per member
    agent = build_agent(config, data, generators, device)
    _prepare_run_dir(out, config, dataset_id)  # only once the data and the agent are sound: nothing half-made
    algorithm = agent.algorithm
    metric_rng = torch.Generator().manual_seed(config.seed + 10_007)
    pick = torch.randint(data.size, (config.metric_states,), generator=metric_rng).to(device)
    states = MetricStates(
        observations=data.observations[pick][None],
        actions=data.actions[pick][None],
        returns_to_go=data.returns_to_go[pick][None],
        g=_to(agent.symmetry.sample((1, config.metric_states), metric_rng, full_group=True), device),
    )
    checkpoints = out / "checkpoints"
    start = 0
    latest = latest_checkpoint(checkpoints)
    if latest is not None:
        start = int(load_checkpoint(latest, algorithm.modules, algorithm.optimizers, generators)["step"])

    from torch.utils.tensorboard import SummaryWriter  # lazy: pulls in tensorboard

    writer = SummaryWriter(str(out / "tensorboard"), purge_step=start + 1)
    sums: dict[str, Tensor] = {}
    first_bad: dict[str, Tensor] = {}
    count = 0
    wall = time.perf_counter()
    summary: dict[str, Any] = {}
    try:
        for step in range(start + 1, config.steps + 1):
            batch = data.sample(generators, config.batch_size)
            g = agent.augmenter.sample(generators, config.batch_size, device) if agent.augmenter else None
            losses = algorithm.update(batch, g, step)
            for name, value in losses.items():
                sums[name] = sums.get(name, torch.zeros_like(value)) + value
                bad = ~torch.isfinite(value).all()
                previous = first_bad.get(name, torch.full((), -1, device=value.device))
                first_bad[name] = torch.where(bad & (previous < 0), torch.full_like(previous, step), previous)
            count += 1
            if step % config.log_every == 0 or step == config.steps:
                record = _log_point(step, sums, first_bad, count, agent, states, config, wall)
                _append_metrics(out, record, writer)
                if on_progress is not None:
                    on_progress(step, record)
                sums, count, wall = {}, 0, time.perf_counter()
            evaluation = config.evaluation
            if evaluation.episodes and evaluation.every and step % evaluation.every == 0 and step < config.steps:
                curve = {"step": step, "evaluation": evaluate_agent(agent, data, config)}
                _append_metrics(out, curve, writer)  # learning curve: success and return on train / held-out
            if step % config.checkpoint_every == 0 or step == config.steps:
                save_checkpoint(
                    checkpoints,
                    step,
                    algorithm.modules,
                    algorithm.optimizers,
                    generators,
                    {"config_sha256": config.sha256()},
                )
        final = symmetry_metrics(agent, states, config.seeds)
        summary = {
            "dataset": dataset_id,
            "steps": config.steps,
            "seeds": config.seeds,
            "device": str(device),
            **{name: value.cpu().tolist() for name, value in final.items()},
        }
        if config.evaluation.episodes > 0:
            summary["evaluation"] = evaluate_agent(agent, data, config, per_episode=True)
        atomic_write_json(out / SUMMARY_FILE, summary)
    finally:
        writer.close()
    return summary


def _to(g: GroupElement, device: torch.device) -> GroupElement:
    return GroupElement(angle=g.angle.to(device), mirror=g.mirror.to(device))


def _log_point(
    step: int,
    sums: dict[str, Tensor],
    first_bad: dict[str, Tensor],
    count: int,
    agent: Agent,
    states: MetricStates,
    config: TrainConfig,
    wall: float,
) -> dict[str, Any]:
    """The one host synchronisation per log interval: check for NaN, average losses, add symmetry metrics."""
    for name, bad_step in first_bad.items():
        if int(bad_step) >= 0:
            raise TrainingDivergedError(f"loss {name} became NaN/inf at step {int(bad_step)}; stopping the run")
    record: dict[str, Any] = {"step": step, "updates_per_s": count / max(time.perf_counter() - wall, 1e-9)}
    for name, total in sums.items():
        record[name] = (total / count).cpu().tolist()
    for name, value in symmetry_metrics(agent, states, config.seeds).items():
        record[name] = value.cpu().tolist()
    return record


def _append_metrics(out: Path, record: dict[str, Any], writer: Any) -> None:
    with (out / METRICS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    for name, value in record.items():
        if name == "evaluation":
            for contexts, metrics in value.items():
                for metric, values in metrics.items():
                    writer.add_scalar(f"evaluation/{contexts}/{metric}", float(np.mean(values)), record["step"])
        elif name != "step":
            values = value if isinstance(value, list) else [value]
            writer.add_scalar(f"{name}/mean", float(np.mean(values)), record["step"])


def evaluate_agent(
    agent: Agent, data: OfflineData, config: TrainConfig, *, per_episode: bool = False
) -> dict[str, Any]:
    """Roll the deterministic policy out on the train and held-out contexts of the eval env.

    The held-out set is ``config.evaluation.held_out``: the test contexts, or the validation
    contexts when tuning (then the test contexts are never rolled out).
    Each set gets ``config.evaluation.episodes`` episodes per member (the train set
    ``train_episodes`` when given): its first that many angles,
    cycled (with fresh start noise, the reset seed being ``seed + episode``) when the set is smaller,
    e.g. a single training context.

    Args:
        agent: The trained agent.
        data: Its dataset (the eval env spec lives in the metadata).
        config: Training config (episodes, seed, discount).
        per_episode: Also return every episode's outcome, ``(E, episodes)``, and its context.

    Returns:
        Per set (``train``, and ``test`` or ``validation``): ``success`` and ``discounted_return``
        averaged per member; with ``per_episode`` also ``context_deg`` and ``episodes`` (the unaveraged values).
    """
    spec = data.metadata["eval_env_spec"]
    results: dict[str, Any] = {}
    evaluation = config.evaluation
    for name in ("train", evaluation.held_out):
        episodes = evaluation.train_episodes if name == "train" and evaluation.train_episodes else evaluation.episodes
        angles = evaluation_angles(spec, name, episodes)
        outcome = rollout(agent.act, spec, angles, config.seeds, config.gamma, config.seed, data.rewards.device)
        results[name] = {key: value.mean(axis=1).tolist() for key, value in outcome.items()}
        if per_episode:
            results[name]["context_deg"] = np.degrees(angles).tolist()
            results[name]["episodes"] = {key: value.tolist() for key, value in outcome.items()}
    return results
