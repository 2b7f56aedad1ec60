r"""A symmetric DQN behaviour expert for the discrete Rotational Reacher: the paper's behaviour policy.

arXiv 2607.02288 collects its datasets with "a behaviour policy trained in one context, made
symmetric": greedy for ``expert`` data, ε-greedy with ε = 0.6 for ``suboptimal`` data. This file
trains that policy: a double DQN with a Huber loss, online in context 0 of the discrete reacher
(:class:`sim.reacher.RotationalReacherDiscreteEnv`, any :class:`sim.config.ReacherConfig`), then
serves it as a :class:`sim.behaviour.BehaviourPolicy`. The analytic IK + PD expert
(:mod:`sim.behaviour`) stays the default; an expert greedy in its own action values is what the
DQN adds (the analytic one is not: a one-step deviation ties or beats it in a third of the states).

**Symmetric by construction.** The Q-network runs in the canonical frame of the reacher's symmetry
spec (``deploy/symmetry/reacher.yaml``, :class:`models.canonical.CanonicalWrapper`): with φ the goal
bearing, ``Q(o, ·) = net(g(−φ)·o)``. Every rotation of o has the same canonical observation, so Q
is exactly SO(2)-invariant for any weights (the torques, hence the action indices, do not rotate).
We chose this over C4 augmentation or an equivariant layer because it is exact for *every*
rotation (not only C4), costs nothing in training, and fits training in one context: context 0 is
already canonical (φ = 0), so the network is trained on exactly the inputs it will see anywhere.

**Loss** (double DQN, van Hasselt et al. 2016, with the Huber loss of Mnih et al. 2015). For a
replayed transition (s, a, r̃, s′, d), d = 1 when s′ is terminal (the goal; a time-limit
truncation bootstraps), online weights θ and target weights θ̄:

.. math::

    a^\star = \arg\max_{a'} Q_\theta(s', a'),\qquad
    y = \tilde r + \gamma\,(1 - d)\,Q_{\bar\theta}(s', a^\star),

    L(\theta) = \mathbb{E}\big[H_\delta(Q_\theta(s, a) - y)\big],\qquad
    H_\delta(x) = \begin{cases} x^2/2 & |x| \le \delta \\ \delta(|x| - \delta/2) & \text{else,}\end{cases}

with θ̄ a hard copy of θ every ``target_update_every`` updates. The online network picks a*, the
target network values it: that removes the max operator's overestimation bias.

**Shaping** (Ng, Harada & Russell 1999). The task reward is sparse (1 at the goal); learning uses
``r̃ = r + γ Φ(s′) − Φ(s)`` with ``Φ(s) = −k·d(s)/d₀`` (d the hand-goal distance, d₀ its value at
reset) and Φ = 0 at the goal. Potential-based shaping leaves the optimal policy unchanged, and the
learned values are ``Q_task(s, a) − Φ(s)``: the same argmax in every state. So the greedy DQN is
greedy in the task's action values, whatever k.

Checkpoints are a folder ``dqn-<hash>/`` holding ``q_network.safetensors`` and ``dqn.json`` (the
configs, the symmetry spec, the training record; no pickle), written atomically and named by the
hash of everything that determines training, so :func:`trained_dqn` trains once per config.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from models.canonical import CanonicalWrapper
from models.features import ReacherFeatures
from models.symmetry import SymmetrySpec
from pipeline.io import atomic_directory, atomic_write_json, sha256_json
from sim.config import ReacherConfig
from sim.reacher import RotationalReacherDiscreteEnv
from sim.robot import load_robot_description

#: Version tag of ``dqn.json``; a checkpoint of another format is refused.
CHECKPOINT_FORMAT = "symgate-dqn-expert/1"
WEIGHTS_FILE = "q_network.safetensors"
META_FILE = "dqn.json"


class DQNConfig(BaseModel):
    """How the DQN behaviour expert is trained (online, in one context of the discrete reacher)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    context_deg: float = Field(0.0, description="The context it is trained in, degrees (the paper: one context).")
    total_steps: int = Field(30000, gt=0, description="Environment steps of online training.")
    hidden: tuple[int, ...] = Field((256, 256), description="Hidden widths of the Q-network's MLP.")
    learning_rate: float = Field(1e-3, gt=0.0, description="Adam learning rate.")
    batch_size: int = Field(128, gt=0, description="Transitions per update.")
    gamma: float = Field(0.95, gt=0.0, lt=1.0, description="Discount (the paper's γ = 0.95).")
    buffer_size: int = Field(100000, gt=0, description="Replay buffer capacity, transitions (oldest overwritten).")
    learning_starts: int = Field(1000, ge=0, description="Random-action steps before the first update.")
    train_every: int = Field(2, gt=0, description="Environment steps per gradient update.")
    target_update_every: int = Field(250, gt=0, description="Updates between hard copies θ̄ ← θ.")
    epsilon_start: float = Field(1.0, ge=0.0, le=1.0, description="Exploration ε at the start of training.")
    epsilon_end: float = Field(0.05, ge=0.0, le=1.0, description="Exploration ε after the decay.")
    epsilon_decay_fraction: float = Field(
        0.3, gt=0.0, le=1.0, description="Fraction of total_steps over which ε decays linearly."
    )
    huber_delta: float = Field(1.0, gt=0.0, description="δ of the Huber loss.")
    shaping: float = Field(
        1.0, ge=0.0, description="k of the potential Φ(s) = -k·d(s)/d₀ (policy-invariant shaping); 0 = task reward."
    )
    velocity_scale: float = Field(10.0, gt=0.0, description="Joint velocities are divided by this (rad/s) as inputs.")
    eval_every: int = Field(
        2000, gt=0, description="Steps between greedy evaluations; the best greedy policy seen is kept."
    )
    eval_episodes: int = Field(8, gt=0, description="Greedy episodes (reset seeds 0..n-1) per evaluation.")
    seed: int = Field(0, description="Seed of weights, exploration, minibatches and episode resets.")


def huber(x: Tensor, delta: float) -> Tensor:
    """Elementwise Huber loss H_δ(x): x²/2 for |x| ≤ δ, δ(|x| − δ/2) beyond."""
    absolute = x.abs()
    return torch.where(absolute <= delta, 0.5 * x * x, delta * (absolute - 0.5 * delta))


def double_dqn_target(
    reward: Tensor, terminated: Tensor, next_q_online: Tensor, next_q_target: Tensor, gamma: float
) -> Tensor:
    """The target y = r + γ(1 − d)·Q_θ̄(s′, argmax_a′ Q_θ(s′, a′)), shape ``(B,)``.

    Args:
        reward: (Shaped) rewards r̃, ``(B,)``.
        terminated: 1 where s′ is terminal, ``(B,)``.
        next_q_online: Q_θ(s′, ·), ``(B, A)``: picks the action.
        next_q_target: Q_θ̄(s′, ·), ``(B, A)``: values it.
        gamma: Discount γ.
    """
    best = next_q_online.argmax(dim=-1, keepdim=True)
    value = next_q_target.gather(-1, best).squeeze(-1)
    return reward + gamma * (1.0 - terminated) * value


def double_dqn_loss(
    online: nn.Module, target: nn.Module, batch: dict[str, Tensor], gamma: float, delta: float
) -> Tensor:
    """The double-DQN Huber loss L(θ) = mean H_δ(Q_θ(s, a) − y) of a batch (y carries no gradient).

    Args:
        online: Q_θ, observations ``(B, D)`` → ``(B, A)``.
        target: Q_θ̄, the same shapes.
        batch: ``observation``, ``action`` (int64), ``reward``, ``next_observation``, ``terminated``.
        gamma: Discount γ.
        delta: δ of the Huber loss.
    """
    size = len(batch["action"])
    q_both = online(torch.cat([batch["observation"], batch["next_observation"]]))  # one pass for s and s′
    with torch.no_grad():
        y = double_dqn_target(
            batch["reward"], batch["terminated"], q_both[size:], target(batch["next_observation"]), gamma
        )
    q = q_both[:size].gather(-1, batch["action"].unsqueeze(-1)).squeeze(-1)
    return huber(q - y, delta).mean()


class _FeatureMLP(nn.Module):
    """The network in the canonical frame: ``MLP(scale ⊙ ReacherFeatures(o))``."""

    scale: Tensor

    def __init__(self, features: ReacherFeatures, hidden: Sequence[int], n_actions: int, velocity_scale: float) -> None:
        super().__init__()
        widths = [features.out_features, *hidden]
        layers: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], n_actions))
        self.features = features
        self.mlp = nn.Sequential(*layers)
        is_velocity = torch.tensor([name.startswith("joint_velocity.") for name in features.feature_names])
        self.register_buffer("scale", torch.where(is_velocity, 1.0 / velocity_scale, 1.0))

    def forward(self, observation: Tensor) -> Tensor:
        q: Tensor = self.mlp(self.features(observation) * self.scale)
        return q


class SymmetricQNetwork(nn.Module):
    """Q-values of the discrete reacher's actions, invariant under every rotation by construction.

    ``Q(o, ·) = MLP(scale ⊙ ReacherFeatures(g(−φ)·o))``: the target-centred shoulder, elbow and hand
    points and the joint velocities (divided by ``velocity_scale``), computed in the canonical frame.

    Args:
        observation_names: The env's observation component names.
        spec: The reacher's symmetry spec (rotation; torques invariant).
        action_names: The env's action component names (the torques).
        n_actions: Number of discrete actions.
        hidden: Hidden widths of the MLP (ReLU).
        urdf: The arm's URDF (link lengths and joint names for the features).
        velocity_scale: rad/s per unit of velocity input.
    """

    def __init__(
        self,
        observation_names: Sequence[str],
        spec: SymmetrySpec,
        action_names: Sequence[str],
        n_actions: int,
        hidden: Sequence[int],
        urdf: Path,
        velocity_scale: float,
    ) -> None:
        super().__init__()
        features = ReacherFeatures.from_robot(load_robot_description(urdf), observation_names)
        self.n_actions = n_actions
        self.canonical = CanonicalWrapper(
            _FeatureMLP(features, hidden, n_actions, velocity_scale),
            spec.bind(observation_names, action_names),
            frame_field="goal_position",
            output="invariant",
        )

    def forward(self, observation: Tensor) -> Tensor:
        """Q-values ``(..., A)`` of observations ``(..., D)``."""
        q: Tensor = self.canonical(observation)
        return q


@dataclass
class ReplayBuffer:
    """Uniform replay of the last ``capacity`` transitions (numpy ring buffer)."""

    capacity: int
    observation_size: int

    def __post_init__(self) -> None:
        self.observation = np.zeros((self.capacity, self.observation_size), dtype=np.float32)
        self.next_observation = np.zeros_like(self.observation)
        self.action = np.zeros(self.capacity, dtype=np.int64)
        self.reward = np.zeros(self.capacity, dtype=np.float32)
        self.terminated = np.zeros(self.capacity, dtype=np.float32)
        self.size = 0
        self._next = 0

    def add(
        self,
        observation: NDArray[np.float32],
        action: int,
        reward: float,
        next_observation: NDArray[np.float32],
        terminated: bool,
    ) -> None:
        """Store one transition."""
        i = self._next
        self.observation[i], self.action[i], self.reward[i] = observation, action, reward
        self.next_observation[i], self.terminated[i] = next_observation, float(terminated)
        self._next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Tensor]:
        """A uniformly drawn minibatch, as tensors."""
        index = rng.integers(0, self.size, size=batch_size)
        return {
            name: torch.as_tensor(getattr(self, name)[index])
            for name in ("observation", "action", "reward", "next_observation", "terminated")
        }


def checkpoint_hash(env: ReacherConfig, config: DQNConfig, spec: SymmetrySpec) -> str:
    """sha256 of everything that determines training: the env, the DQN config and the symmetry spec."""
    return sha256_json(
        {
            "format": CHECKPOINT_FORMAT,
            "env": env.model_dump(mode="json"),
            "dqn": config.model_dump(mode="json"),
            "symmetry": spec.model_dump(mode="json"),
        }
    )


class DQNExpert:
    """The trained DQN as a behaviour policy: greedy in its own Q (``name = "expert"``).

    Args:
        network: The trained Q-network (put in eval mode).
        meta: The contents of ``dqn.json``.
    """

    name = "expert"

    def __init__(self, network: SymmetricQNetwork, meta: dict[str, Any]) -> None:
        self.network = network.eval()
        self.meta = meta
        self.env_config = ReacherConfig.model_validate(meta["env"])
        self.n_actions = int(meta["n_actions"])

    def q_values(self, observations: NDArray[np.floating]) -> NDArray[np.float64]:
        """Q(o, ·) of observations ``(..., D)`` → ``(..., A)`` (shaped values: argmax = the task's)."""
        with torch.no_grad():
            q = self.network(torch.as_tensor(np.asarray(observations, dtype=np.float32)))
        values: NDArray[np.float64] = q.double().numpy()
        return values

    def __call__(self, observation: NDArray[np.floating], rng: np.random.Generator) -> int:
        """The greedy action argmax_a Q(o, a) (``rng`` is unused)."""
        return int(self.q_values(observation).argmax())

    @classmethod
    def load(cls, folder: Path) -> DQNExpert:
        """Load a checkpoint folder written by :func:`save_dqn`.

        Raises:
            ValueError: A missing or foreign ``dqn.json``, a hash that does not match its configs, or
                weights that do not fit the network; the message names the file.
        """
        meta_path = folder / META_FILE
        try:
            meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{meta_path}: not a DQN expert checkpoint: {error}") from error
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        env = ReacherConfig.model_validate(meta["env"])
        config = DQNConfig.model_validate(meta["dqn"])
        spec = SymmetrySpec.model_validate(meta["symmetry"])
        if checkpoint_hash(env, config, spec) != meta["hash"]:
            raise ValueError(f"{meta_path}: hash does not match its env, dqn and symmetry configs (edited?)")
        network = _build_network(env, config, spec)
        try:
            network.load_state_dict(load_file(folder / WEIGHTS_FILE), strict=True)
        except (OSError, RuntimeError) as error:
            raise ValueError(f"{folder / WEIGHTS_FILE}: weights do not load: {error}") from error
        return cls(network, meta)


class EpsilonGreedyPolicy:
    """With probability ε a uniformly random action, otherwise the DQN's greedy one (``suboptimal``)."""

    name = "suboptimal"

    def __init__(self, base: DQNExpert, epsilon: float) -> None:
        self.base = base
        self.epsilon = epsilon

    def __call__(self, observation: NDArray[np.floating], rng: np.random.Generator) -> int:
        """A random action with probability ε, else the greedy one."""
        if rng.random() < self.epsilon:
            return int(rng.integers(self.base.n_actions))
        return self.base(observation, rng)


def _build_network(env: ReacherConfig, config: DQNConfig, spec: SymmetrySpec) -> SymmetricQNetwork:
    probe = RotationalReacherDiscreteEnv(env)
    try:
        names, actions, n_actions = probe.observation_names, probe.action_names, len(probe.action_table)
    finally:
        probe.close()
    return SymmetricQNetwork(names, spec, actions, n_actions, config.hidden, env.urdf, config.velocity_scale)


@dataclass(frozen=True)
class GreedyOutcome:
    """Greedy episodes of a Q-network in one context.

    Attributes:
        success: Fraction of episodes that reached the goal.
        steps: Mean control steps to the goal of the successful episodes (inf when none was).
        closest: Mean over episodes of the hand's closest approach to the goal, m.
    """

    success: float
    steps: float
    closest: float


def greedy_episodes(
    network: nn.Module, env: RotationalReacherDiscreteEnv, context: float, seeds: Sequence[int]
) -> GreedyOutcome:
    """Run one greedy episode (argmax_a Q) per reset seed in context ``context`` (rad)."""
    successes, steps, closest = 0, [], []
    for seed in seeds:
        observation, info = env.reset(seed=int(seed), options={"context": context})
        nearest = float(info["distance"])
        for step in range(1, env.config.max_episode_steps + 1):
            with torch.no_grad():
                action = int(network(torch.as_tensor(observation)).argmax())
            observation, _, terminated, truncated, info = env.step(action)
            nearest = min(nearest, float(info["distance"]))
            if terminated:
                successes += 1
                steps.append(step)
            if terminated or truncated:
                break
        closest.append(nearest)
    return GreedyOutcome(
        success=successes / len(seeds),
        steps=float(np.mean(steps)) if steps else math.inf,
        closest=float(np.mean(closest)),
    )


def train_dqn(
    env_config: ReacherConfig, config: DQNConfig, spec: SymmetrySpec, *, progress: bool = True
) -> tuple[SymmetricQNetwork, dict[str, Any]]:
    """Train the DQN online in ``config.context_deg`` of the discrete reacher ``env_config``.

    ε-greedy exploration with ε decaying linearly, one double-DQN update (:func:`double_dqn_loss`)
    every ``train_every`` steps on a uniform replay minibatch, shaped rewards (module docstring).
    Every ``eval_every`` steps the greedy policy runs ``eval_episodes`` episodes; the weights of the
    best evaluation (success, then fewest steps) are the result. Trains on one torch thread (restored after).

    Args:
        env_config: The env (horizon, rates, reward, start pose all come from it).
        config: Training settings.
        spec: The reacher's symmetry spec (the canonical frame).
        progress: Show a progress bar.

    Returns:
        The trained network and a training record (evaluations, episodes, wall time).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches of 128 through a small MLP: more threads only add synchronisation
    try:
        return _train(env_config, config, spec, progress)
    finally:
        torch.set_num_threads(threads)


def _train(
    env_config: ReacherConfig, config: DQNConfig, spec: SymmetrySpec, progress: bool
) -> tuple[SymmetricQNetwork, dict[str, Any]]:
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        online = _build_network(env_config, config, spec)
    target = copy.deepcopy(online)
    optimizer = torch.optim.Adam(online.parameters(), lr=config.learning_rate)
    env = RotationalReacherDiscreteEnv(env_config)
    evaluation_env = RotationalReacherDiscreteEnv(env_config)
    context = math.radians(config.context_deg)
    buffer = ReplayBuffer(min(config.buffer_size, config.total_steps), len(env.observation_names))
    n_actions = len(env.action_table)
    decay_steps = config.epsilon_decay_fraction * config.total_steps
    evaluations: list[dict[str, float]] = []
    best: tuple[float, float] = (-1.0, -math.inf)
    best_state = copy.deepcopy(online.state_dict())
    episodes, updates, episode_seed = 0, 0, 1_000_000 + config.seed * 100_000  # eval episodes use seeds 0..n-1

    observation, info = env.reset(seed=episode_seed, options={"context": context})
    start_distance = max(float(info["distance"]), 1e-9)
    potential = -config.shaping * float(info["distance"]) / start_distance
    columns = (
        TextColumn("DQN expert"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("train", total=config.total_steps, status="")
        for step in range(config.total_steps):
            epsilon = config.epsilon_end + (config.epsilon_start - config.epsilon_end) * max(
                0.0, 1 - step / decay_steps
            )
            if step < config.learning_starts or rng.random() < epsilon:
                action = int(rng.integers(n_actions))
            else:
                with torch.no_grad():
                    action = int(online(torch.as_tensor(observation)).argmax())
            next_observation, reward, terminated, truncated, info = env.step(action)
            next_potential = 0.0 if terminated else -config.shaping * float(info["distance"]) / start_distance
            shaped = float(reward) + config.gamma * next_potential - potential
            buffer.add(observation, action, shaped, next_observation, terminated)
            observation, potential = next_observation, next_potential
            if terminated or truncated:
                episodes += 1
                episode_seed += 1
                observation, info = env.reset(seed=episode_seed, options={"context": context})
                start_distance = max(float(info["distance"]), 1e-9)
                potential = -config.shaping * float(info["distance"]) / start_distance

            if step >= config.learning_starts and step % config.train_every == 0:
                loss = double_dqn_loss(
                    online, target, buffer.sample(config.batch_size, rng), config.gamma, config.huber_delta
                )
                optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(loss)
                optimizer.step()
                updates += 1
                if updates % config.target_update_every == 0:
                    target.load_state_dict(online.state_dict())

            if (step + 1) % config.eval_every == 0 or step + 1 == config.total_steps:
                outcome = greedy_episodes(online, evaluation_env, context, range(config.eval_episodes))
                evaluations.append({"step": step + 1, "success": outcome.success, "steps": outcome.steps})
                if (outcome.success, -outcome.steps) > best:
                    best = (outcome.success, -outcome.steps)
                    best_state = copy.deepcopy(online.state_dict())
                bar.update(task, status=f"greedy success {outcome.success:.2f}, steps {outcome.steps:.1f}")
            bar.advance(task)
    env.close()
    evaluation_env.close()
    online.load_state_dict(best_state)
    record = {
        "episodes": episodes,
        "updates": updates,
        "evaluations": evaluations,
        "best_success": best[0],
        "best_steps": -best[1],
        "wall_s": time.perf_counter() - started,
    }
    return online.eval(), record


def save_dqn(
    folder: Path,
    network: SymmetricQNetwork,
    env_config: ReacherConfig,
    config: DQNConfig,
    spec: SymmetrySpec,
    record: dict[str, Any],
) -> None:
    """Write ``q_network.safetensors`` + ``dqn.json`` into ``folder`` atomically (replacing it)."""
    meta = {
        "format": CHECKPOINT_FORMAT,
        "hash": checkpoint_hash(env_config, config, spec),
        "env": env_config.model_dump(mode="json"),
        "dqn": config.model_dump(mode="json"),
        "symmetry": spec.model_dump(mode="json"),
        "n_actions": network.n_actions,
        "training": record,
    }
    with atomic_directory(folder, overwrite=True) as staging:
        save_file({name: tensor.contiguous() for name, tensor in network.state_dict().items()}, staging / WEIGHTS_FILE)
        atomic_write_json(staging / META_FILE, meta)


def trained_dqn(
    env_config: ReacherConfig, config: DQNConfig, spec: SymmetrySpec, cache: Path, *, progress: bool = True
) -> Path:
    """The checkpoint folder of this (env, DQN, spec) under ``cache``, training it first if absent.

    The folder is ``cache/dqn-<first 16 hex of checkpoint_hash>``: an experiment that asks for the same
    behaviour expert again (another table, a rerun) loads it instead of training.
    """
    folder = cache / f"dqn-{checkpoint_hash(env_config, config, spec)[:16]}"
    if not (folder / META_FILE).exists():
        network, record = train_dqn(env_config, config, spec, progress=progress)
        save_dqn(folder, network, env_config, config, spec, record)
    return folder
