"""Correctness of discrete CQL: symgate's ``DiscreteCQL`` vs d3rlpy 2.8.1's ``DiscreteCQL``, same data, one run.

One expert dataset of the paper's protocol (10 trajectories from one context, discrete 9-action
reacher) is built by the experiment's own path (simulated fleet → bag → Minari). Both learners get
the paper's Table 7 expert setting (lr 1e-4, batch 128, α 5, γ 0.95, twin critics, a hard target
update every 100 updates) but a smaller MLP (``HIDDEN``, to fit a few minutes on 2 CPU cores),
``UPDATES`` updates, ``SEEDS`` seeds each, no augmentation. d3rlpy learns on symgate's encoded
network inputs (the normalised FK features), so the two differ only in the algorithm. One
difference remains by design: symgate applies the α-term to each twin head, d3rlpy to their mean,
so per head d3rlpy's conservative gradient is half ours (equal with one critic). symgate trains
through ``symgate train`` (its seeds one vectorised model); d3rlpy runs in ``.venv-bench``
(``bench/d3rlpy_cql_runner.py``), concurrently.

Measured per seed, on both, with the same code:

- ``E[Q − G]``: min of the twin Q at the data's action minus the discounted return-to-go G, over
  every transition of the dataset (G ∈ [0, 1]: the reward is 1 at the goal);
- action match: how often the greedy action argmax_a mean_i Qᵢ(s, a) is the data's action;
- success and normalised return (÷ the expert's from the same start, as in the experiment) of the
  greedy policy in the data's context (``TRAIN_EPISODES`` episodes) and on ``TEST_CONTEXTS``
  held-out rotations, by symgate's own rollout.

Ours is "within the peer's spread" when our seed mean lies within d3rlpy's seed mean ± 2 seed
standard deviations (or equals it, when every d3rlpy seed agrees). Writes
``bench/results/correctness-<date>-<host>.json`` (rows + every seed) and a ``.md`` beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_train import D3rlpyRunner, ensure_bench_venv
from common import write_result
from torch import Tensor

from pipeline.experiment.data import ONE_CONTEXT, DatasetSpec, build_dataset, eval_env_spec, expert_returns
from pipeline.export.export import load_policy
from pipeline.io import load_config
from pipeline.train.buffer import OfflineData, load_offline_data
from pipeline.train.config import TrainConfig
from pipeline.train.cql import DiscreteCQL
from pipeline.train.evaluate import evaluation_angles, rollout
from pipeline.train.trainer import build_agent, member_generators, train
from sim.contexts import ContextSetName

SEEDS = 5
UPDATES = 1200
TARGET_PERIOD = 100
HIDDEN = (256, 256)  # the paper's [512, 256, 128] costs d3rlpy ~0.36 CPU-s per update and seed on the 2-core VM
TRAIN_EPISODES = 10
TEST_CONTEXTS = 10
ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().with_name("d3rlpy_cql_runner.py")
DEVICE = torch.device("cpu")
QFn = Any  # (E, B, D) raw observations → (2, E, B, n) Q-values


def paper_config() -> TrainConfig:
    """The paper's Table 7 expert preset, no augmentation, ``UPDATES`` updates, ``SEEDS`` vectorised seeds."""
    preset = load_config(ROOT / "deploy" / "train" / "paper-cql-expert.yaml", TrainConfig)
    data = preset.model_dump(mode="json")
    data["augmentation"] |= {"strategy": "none", "spec": str(ROOT / data["augmentation"]["spec"])}
    data |= {
        "steps": UPDATES,
        "hidden": list(HIDDEN),
        "target_update_every": TARGET_PERIOD,
        "seeds": SEEDS,
        "seed": 0,
        "device": DEVICE.type,
        "log_every": UPDATES,
        "checkpoint_every": UPDATES,
    }
    return TrainConfig.model_validate(data)


def export_npz(data: OfflineData, config: TrainConfig, encode: Any, path: Path) -> None:
    """The transitions, encoded into symgate's network inputs, and the shared settings (no pickle)."""
    assert data.discrete_torques is not None
    np.savez(
        path,
        observations=encode(data.observations).numpy(),
        actions=data.actions.numpy(),
        rewards=data.rewards.numpy(),
        next_observations=encode(data.next_observations).numpy(),
        terminals=data.terminals.numpy(),
        n_actions=np.int64(len(data.discrete_torques)),
        seeds=np.int64(SEEDS),
        updates=np.int64(UPDATES),
        gamma=np.float64(config.gamma),
        batch_size=np.int64(config.batch_size),
        hidden=np.asarray(config.hidden, dtype=np.int64),
        learning_rate=np.float64(config.critic_lr),
        alpha=np.float64(config.cql.alpha),
        target_update_interval=np.int64(TARGET_PERIOD),
        n_critics=np.int64(2),
    )


def measure(q_fn: QFn, data: OfflineData, spec: dict[str, Any], config: TrainConfig) -> dict[str, list[float]]:
    """Per-seed E[Q − G], action match, and success / normalised return in and out of the data's context."""
    observations = data.observations[None].expand(SEEDS, *data.observations.shape)
    with torch.no_grad():
        q = q_fn(observations)  # (2, E, N, n)
    actions = data.actions[None].expand(SEEDS, -1)
    q_data = q.gather(-1, actions[None, ..., None].expand(2, *actions.shape, 1)).squeeze(-1).min(dim=0).values
    metrics: dict[str, list[float]] = {
        "q_minus_return_to_go": (q_data - data.returns_to_go).mean(dim=1).tolist(),
        "action_match": (q.mean(dim=0).argmax(dim=-1) == actions).float().mean(dim=1).tolist(),
    }

    def policy(raw: Tensor) -> Tensor:
        greedy: Tensor = q_fn(raw).mean(dim=0).argmax(dim=-1)
        return greedy

    sets: tuple[tuple[ContextSetName, int], ...] = (("train", TRAIN_EPISODES), ("test", TEST_CONTEXTS))
    for name, episodes in sets:
        angles = evaluation_angles(spec, name, episodes)
        outcome = rollout(policy, spec, angles, SEEDS, config.gamma, config.seed, DEVICE)
        normaliser = expert_returns(spec, angles, config.seed, config.gamma)
        metrics[f"{name}_success"] = outcome["success"].mean(axis=1).tolist()
        metrics[f"{name}_normalised_return"] = (outcome["discounted_return"] / normaliser).mean(axis=1).tolist()
    return metrics


def within(ours: list[float], theirs: list[float]) -> bool:
    """Our seed mean within the peer's seed mean ± 2 sd (equal to it when every peer seed agrees)."""
    spread = 2.0 * float(np.std(theirs, ddof=1))
    return bool(abs(float(np.mean(ours)) - float(np.mean(theirs))) <= max(spread, 1e-9))


METRICS = {
    "q_minus_return_to_go": "E[Q - G] on the expert data's (s, a) (G in [0, 1])",
    "action_match": "greedy action = data's action, fraction of expert states",
    "train_success": f"success in the data's context ({TRAIN_EPISODES} episodes)",
    "train_normalised_return": "normalised return in the data's context",
    "test_success": f"success on {TEST_CONTEXTS} held-out rotations",
    "test_normalised_return": f"normalised return on {TEST_CONTEXTS} held-out rotations",
}


def markdown(rows: list[dict[str, Any]], info: dict[str, Any], seconds: dict[str, float]) -> str:
    """The rows with every seed, and how they were measured."""
    lines = [
        f"# Discrete CQL: symgate vs d3rlpy {info['d3rlpy']} DiscreteCQL, {SEEDS} seeds each, one run",
        "",
        "Same expert dataset (10 trajectories, one context, discrete 9-action reacher), same inputs (symgate's "
        f"encoded features), lr 1e-4, batch 128, α 5, γ 0.95, MLP {list(HIDDEN)}, 2 critics, hard target update "
        f"every {TARGET_PERIOD}, {UPDATES} updates. Training wall time: symgate {seconds['symgate']:.0f} s "
        f"({SEEDS} seeds vectorised), d3rlpy {seconds['d3rlpy']:.0f} s ({SEEDS} seeds in sequence), concurrently "
        "on a shared 2-core VM.",
        "",
        "| metric | symgate mean ± sd | d3rlpy mean ± sd | within d3rlpy's spread | symgate seeds | d3rlpy seeds |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours, theirs = row["symgate_seeds"], row["reference_seeds"]
        lines.append(
            f"| {row['metric']} | {np.mean(ours):.3f} ± {np.std(ours, ddof=1):.3f} "
            f"| {np.mean(theirs):.3f} ± {np.std(theirs, ddof=1):.3f} | {'yes' if row['within_spread'] else 'no'} "
            f"| {', '.join(f'{v:.3f}' for v in ours)} | {', '.join(f'{v:.3f}' for v in theirs)} |"
        )
    lines += ["", "Within the spread: |symgate mean − d3rlpy mean| ≤ 2 × d3rlpy's seed standard deviation."]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Build the data, train both, measure both, write the result files."""
    started = time.perf_counter()
    python = ensure_bench_venv()
    work = Path(tempfile.mkdtemp(prefix="symgate-bench-correctness-"))
    os.environ["MINARI_DATASETS_PATH"] = str(work / "datasets")
    try:
        spec_data = DatasetSpec("expert", True, 0, 10, ONE_CONTEXT, TEST_CONTEXTS)
        dataset_id = build_dataset(spec_data, work)
        config = paper_config()
        data = load_offline_data(dataset_id, DEVICE, config.gamma)
        untrained = build_agent(config, data, member_generators(config), DEVICE).algorithm
        assert isinstance(untrained, DiscreteCQL)
        encoder = untrained.critic.encoder

        def encode(x: Tensor) -> Tensor:
            with torch.no_grad():
                features: Tensor = encoder(x[None])[0]
            return features

        export_npz(data, config, encode, work / "dataset.npz")
        with ThreadPoolExecutor(1) as pool:  # d3rlpy trains in its own process while symgate trains here
            t0 = time.perf_counter()
            future = pool.submit(D3rlpyRunner, python, work / "dataset.npz", work / "d3rlpy.log", RUNNER)
            train(config, dataset_id, work / "run")
            ours_s = time.perf_counter() - t0
            runner = future.result()
        with runner:
            print(f"trained: symgate {ours_s:.0f} s, d3rlpy {sum(runner.info['train_s']):.0f} s")
            trained = load_policy(work / "run").agent.algorithm
            assert isinstance(trained, DiscreteCQL)
            critic = trained.critic

            def ours(raw: Tensor) -> Tensor:
                q: Tensor = critic(raw)
                return q

            def theirs(raw: Tensor) -> Tensor:
                features = encode(raw.reshape(-1, raw.shape[-1])).reshape(*raw.shape[:-1], -1)
                reply = runner.send({"features": features.tolist()})
                return torch.tensor(reply["q"], dtype=torch.float32).transpose(0, 1)  # (S, 2, B, n) → (2, S, B, n)

            spec = eval_env_spec(dataset_id)
            ours_metrics = measure(ours, data, spec, config)
            theirs_metrics = measure(theirs, data, spec, config)
            info = runner.info
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, metric in METRICS.items():
        mine, peer = ours_metrics[name], theirs_metrics[name]
        reference = float(np.mean(peer))
        rows.append(
            {
                "metric": metric,
                "symgate": float(np.mean(mine)),
                "reference": reference,
                "reference_name": f"d3rlpy {info['d3rlpy']} DiscreteCQL, n_critics 2, same data and inputs",
                "ratio": float(np.mean(mine)) / reference if reference else float("inf"),
                "target": "within d3rlpy's seed mean ± 2 sd",
                "within_spread": within(mine, peer),
                "symgate_seeds": mine,
                "reference_seeds": peer,
            }
        )
    seconds = {"symgate": ours_s, "d3rlpy": float(sum(info["train_s"]))}
    out = write_result("correctness", rows, {"train_s": [seconds["symgate"], seconds["d3rlpy"]]})
    out.with_suffix(".md").write_text(markdown(rows, info, seconds))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
