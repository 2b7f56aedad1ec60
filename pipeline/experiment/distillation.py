r"""Table 1: distil a fresh Q-network onto a symmetric or an asymmetric pessimistic target.

The theory check of arXiv 2607.02288 (Theorems 1 and 2): what matters for generalisation to unseen
contexts is the *structure* of the pessimism, not its amount. The data are greedy-expert
trajectories in the four C4 contexts; the test contexts are rotations never seen.

Action values Q(s, a) are the expert's, measured in PyBullet: from dataset state s take action a
for one control step, then follow the greedy expert; Q(s, a) = γ^(n-1) when the goal is reached at
step n within the episode's time limit, else 0. They are C4-invariant because the dynamics and the
expert are rotation-symmetric (torques do not rotate). With η the amount of pessimism and a*(s) the
greedy expert's action in the data:

.. math::

    \hat Q_{sym}(s, a)  &= Q(s, a) - η\,[a \ne a^*(s)] \\
    \hat Q_{asym}(s, a) &= Q(s, a) - η\,[a \ne a^*(s)]\,m_{k(s)}(a),\qquad m_k(a) = [(a - k) \bmod 4 < 2]

where k(s) ∈ {0, 1, 2, 3} is the C4 context of s (its goal bearing over 90°, rounded): the asymmetric
penalty rotates among the suboptimal actions from one training context to the next. Both targets
have η_max = max (Q − Q̂) = η; only the symmetric one is C4-invariant. The distilled network
minimises L(θ) = E_s Σ_a (Q_θ(s, a) − Q̂(s, a))² and acts greedily, argmax_a Q_θ(s, a).

The greedy action is the expert's, not argmax Q: our analytic expert is not greedy in its own Q (a
one-step deviation ties or beats it in about a third of the states, with ~3.6 tied best actions per
state), and a policy that breaks those ties its own way leaves the states the network was
distilled on. In the paper the expert is greedy in Q*, so the two definitions coincide there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from models.features import ObservationEncoder, ReacherFeatures
from models.layers import EnsembleMLP
from models.networks import EnsembleNetwork
from pipeline.experiment.config import ExperimentConfig
from pipeline.experiment.data import C4_CONTEXTS, DatasetSpec, expert_returns
from pipeline.experiment.paper import eta_key
from pipeline.train.evaluate import MAX_ENVS, evaluation_angles, rollout
from sim.behaviour import BehaviourConfig, make_behaviour_expert
from sim.robot import load_robot_description
from sim.robots.env import env_urdf

TargetKind = Literal["symmetric", "asymmetric"]
TARGET_KINDS: tuple[TargetKind, ...] = ("symmetric", "asymmetric")


def c4_index(observations: NDArray[np.floating], names: Sequence[str]) -> NDArray[np.int64]:
    """The C4 context k ∈ {0, 1, 2, 3} of each observation: its goal bearing in quarter turns, rounded."""
    x, y = observations[..., names.index("goal_position.x")], observations[..., names.index("goal_position.y")]
    index: NDArray[np.int64] = np.rint(np.arctan2(y, x) / (math.pi / 2)).astype(np.int64) % 4
    return index


def non_greedy(q: NDArray[np.float64], greedy: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Which actions are not the greedy one, ``(N, A)``."""
    mask: NDArray[np.bool_] = np.arange(q.shape[-1])[None, :] != greedy[:, None]
    return mask


def symmetric_target(q: NDArray[np.float64], eta: float, greedy: NDArray[np.int64]) -> NDArray[np.float64]:
    """Q minus η on every non-greedy action: the same penalty pattern in every context."""
    target: NDArray[np.float64] = q - eta * non_greedy(q, greedy)
    return target


def asymmetric_target(
    q: NDArray[np.float64], eta: float, greedy: NDArray[np.int64], context: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Q minus η on the non-greedy actions a with (a − k) mod 4 < 2, k the state's C4 context."""
    rotated = (np.arange(q.shape[-1])[None, :] - context[:, None]) % 4 < 2
    target: NDArray[np.float64] = q - eta * (non_greedy(q, greedy) & rotated)
    return target


def pessimistic_target(
    kind: TargetKind,
    q: NDArray[np.float64],
    eta: float,
    greedy: NDArray[np.int64],
    observations: NDArray[np.floating],
    names: Sequence[str],
) -> NDArray[np.float64]:
    """The target Q̂ of one kind for states ``observations`` with action values ``q`` and greedy actions."""
    if kind == "symmetric":
        return symmetric_target(q, eta, greedy)
    return asymmetric_target(q, eta, greedy, c4_index(observations, names))


def pessimism_amount(q: NDArray[np.float64], target: NDArray[np.float64]) -> float:
    """η_max = max over states and actions of Q − Q̂."""
    return float((q - target).max())


def expert_action_values(
    observations: NDArray[np.float32],
    names: Sequence[str],
    env_spec: dict[str, Any],
    gamma: float,
    behaviour: BehaviourConfig | None = None,
    *,
    actions: NDArray[np.int64] | None = None,
) -> NDArray[np.float64]:
    """Q(s, a) of the greedy expert for every state and every discrete action, ``(N, A)``, by simulation.

    Each (state, action) episode starts from the state's exact joint positions and velocities in its
    context, takes the action for one control step and then follows the expert until the goal or
    the time limit; ``MAX_ENVS`` such episodes run at once. The expert is ``behaviour``'s (the
    analytic one by default, or the DQN: :func:`sim.behaviour.make_behaviour_expert`). With
    ``actions`` (one per state, ``(N,)``) only those pairs are simulated and the result is ``(N,)``.
    """
    position = [names.index(n) for n in names if n.startswith("joint_position.")]
    velocity = [names.index(n) for n in names if n.startswith("joint_velocity.")]
    goal = observations[:, [names.index("goal_position.x"), names.index("goal_position.y")]].astype(np.float64)
    contexts = np.arctan2(goal[:, 1], goal[:, 0])
    envs = [gym.make(env_spec["id"], **env_spec.get("kwargs", {})) for _ in range(MAX_ENVS)]
    n_actions = int(envs[0].action_space.n)  # type: ignore[attr-defined]
    expert = make_behaviour_expert(envs[0].unwrapped, behaviour)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)  # unused by the greedy expert
    pairs = (
        list(product(range(len(observations)), range(n_actions)))
        if actions is None
        else list(enumerate(actions.tolist()))
    )
    values = np.zeros(len(pairs))
    try:
        for start in range(0, len(pairs), MAX_ENVS):
            chunk = pairs[start : start + MAX_ENVS]
            live: list[int] = []
            for slot, (state, _) in enumerate(chunk):
                envs[slot].reset(
                    options={
                        "context": float(contexts[state]),
                        "joint_position": observations[state, position].astype(np.float64),
                        "joint_velocity": observations[state, velocity].astype(np.float64),
                    }
                )
                live.append(slot)
            steps = np.zeros(len(chunk), dtype=np.int64)
            acting: list[Any] = [action for _, action in chunk]  # each episode's next action
            while live:
                still = []
                for slot in live:
                    observation, _, terminated, truncated, _ = envs[slot].step(acting[slot])
                    steps[slot] += 1
                    if terminated:
                        values[start + slot] = gamma ** (steps[slot] - 1)
                    elif not truncated:
                        acting[slot] = expert(observation, rng)
                        still.append(slot)
                live = still
    finally:
        for env in envs:
            env.close()
    return values if actions is not None else values.reshape(len(observations), n_actions)


class QNetwork(EnsembleNetwork):
    """A plain ensemble Q-network ``obs → (E, *batch, A)`` (no twin heads: nothing is bootstrapped)."""

    def __init__(
        self,
        members: int,
        encoder: ObservationEncoder,
        n_actions: int,
        hidden: Sequence[int],
        generators: Sequence[torch.Generator],
    ) -> None:
        """Build the trunk: features → one value per action."""
        super().__init__(members, encoder)
        self.trunk = EnsembleMLP(members, encoder.out_features, hidden, n_actions, generators)

    def forward(self, observation: Tensor) -> Tensor:
        """Q-values of every action, ``(E, *batch, A)``."""
        q: Tensor = self.trunk(self.encode(observation))
        return q


@dataclass(frozen=True)
class DistillationData:
    """Every seed's dataset states and their expert action values."""

    observations: NDArray[np.float32]  # (N, D), the seeds' datasets concatenated
    q_values: NDArray[np.float64]  # (N, A)
    greedy: NDArray[np.int64]  # (N,) the expert's action in the data
    slices: tuple[tuple[int, int], ...]  # seed s owns rows [start, stop)
    observation_names: tuple[str, ...]
    env_spec: dict[str, Any]


def dataset_specs(experiment: ExperimentConfig, behaviour: BehaviourConfig | None = None) -> list[DatasetSpec]:
    """One fresh expert dataset over the C4 contexts per seed (``behaviour``'s expert; default analytic)."""
    settings = experiment.distillation
    return [
        DatasetSpec(
            "expert",
            True,
            seed,
            settings.trajectories,
            C4_CONTEXTS,
            experiment.test_contexts,
            experiment.env,
            behaviour=behaviour or BehaviourConfig(),
        )
        for seed in range(experiment.distillation_seeds)
    ]


def load_distillation_data(
    specs: Sequence[DatasetSpec],
    gamma: float,
    action_values: Callable[
        [list[tuple[NDArray[np.float32], Sequence[str], dict[str, Any], float, BehaviourConfig]]], list[Any]
    ],
) -> DistillationData:
    """Every seed's states and expert actions (read back from Minari, one slice per seed) and their action values.

    Args:
        specs: One dataset per seed.
        gamma: Discount of the action values.
        action_values: Maps :func:`expert_action_values` over per-seed argument tuples (e.g. in worker processes).
    """
    from pipeline.train.buffer import load_offline_data

    data = load_offline_data([spec.dataset_id for spec in specs], torch.device("cpu"), gamma)
    assert data.member_slices is not None  # a list of ids always loads per-member slices
    observations = data.observations.numpy()
    env_spec: dict[str, Any] = data.metadata["eval_env_spec"]
    names = data.observation_names
    behaviour = specs[0].behaviour  # every seed's data comes from the same expert
    parts = action_values([(observations[lo:hi], names, env_spec, gamma, behaviour) for lo, hi in data.member_slices])
    return DistillationData(
        observations=observations,
        q_values=np.concatenate(parts),
        greedy=data.actions.numpy(),
        slices=data.member_slices,
        observation_names=names,
        env_spec=env_spec,
    )


def run_distillation(
    data: DistillationData,
    experiment: ExperimentConfig,
    device: torch.device,
    on_progress: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Distil every (target, η, seed) member in one vectorised model, then roll each policy out.

    Args:
        data: Dataset states and their expert action values, per seed.
        experiment: Seeds, η values, regression and evaluation sizes.
        device: Where the network trains.
        on_progress: Called after the regression and after each (target kind, η) cell's rollouts.

    Returns:
        One result per (target kind, η): per-seed normalised train and test returns, success, η_max.
    """
    started = time.perf_counter()
    settings = experiment.distillation
    seeds = len(data.slices)
    cells = list(product(TARGET_KINDS, settings.etas))
    members = len(cells) * seeds  # member m: cell m // seeds, seed m % seeds
    names = data.observation_names
    targets = np.stack(
        [pessimistic_target(kind, data.q_values, eta, data.greedy, data.observations, names) for kind, eta in cells]
    )
    generators = [torch.Generator().manual_seed(m % seeds + 1000 * (m // seeds)) for m in range(members)]
    features = ReacherFeatures.from_robot(load_robot_description(env_urdf(data.env_spec)), names)
    encoder = ObservationEncoder.from_features(features)
    observations = torch.as_tensor(data.observations, device=device)
    encoder.fit(observations)
    network = QNetwork(members, encoder, data.q_values.shape[1], settings.hidden, generators).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
    target_tensor = torch.as_tensor(targets, dtype=torch.float32, device=device)
    bounds = [data.slices[m % seeds] for m in range(members)]
    cell_of = torch.arange(members, device=device) // seeds
    for _ in range(settings.steps):
        index = torch.stack(
            [
                torch.randint(lo, hi, (settings.batch_size,), generator=g)
                for (lo, hi), g in zip(bounds, generators, strict=True)
            ]
        ).to(device)
        prediction = network(observations[index])
        loss = ((prediction - target_tensor[cell_of[:, None], index]) ** 2).sum(dim=-1).mean(dim=-1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    network.eval()
    on_progress()
    results = []
    contexts = experiment_contexts(data.env_spec, experiment)
    normalisers = {
        name: expert_returns(data.env_spec, angles, 0, experiment.gamma) for name, angles in contexts.items()
    }
    for c, (kind, eta) in enumerate(cells):
        group = network.select_members(range(c * seeds, (c + 1) * seeds))

        def greedy(observation: Tensor, group: QNetwork = group) -> Tensor:
            actions: Tensor = group(observation).argmax(dim=-1)
            return actions

        result: dict[str, Any] = {
            "row": kind,
            "column": eta_key(eta),
            "eta_max": pessimism_amount(data.q_values, targets[c]),
        }
        for name, angles in contexts.items():
            outcome = rollout(greedy, data.env_spec, angles, seeds, experiment.gamma, 0, device)
            result[name] = {
                "normalised_return": (outcome["discounted_return"] / normalisers[name]).mean(axis=1).tolist(),
                "success": outcome["success"].mean(axis=1).tolist(),
            }
        results.append(result)
        on_progress()
    for result in results:
        result["wall_s"] = (time.perf_counter() - started) / len(results)
    return results


def experiment_contexts(env_spec: dict[str, Any], experiment: ExperimentConfig) -> dict[str, NDArray[np.float64]]:
    """Evaluation angles: the training contexts cycled to ``train_episodes``, and the held-out test set."""
    return {
        "train": evaluation_angles(env_spec, "train", experiment.train_episodes),
        "test": evaluation_angles(env_spec, "test", experiment.test_contexts),
    }
