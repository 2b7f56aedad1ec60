"""Correctness of discrete CQL, IQL and continuous CQL: symgate vs d3rlpy 2.8.1, same data, one run.

Two expert datasets of the paper's protocol (10 trajectories from one context) are built by the
experiment's own path (simulated fleet → bag → Minari): one on the discrete 9-action reacher, one
on the continuous-torque reacher. Every learner gets the same hyper-parameters as its d3rlpy peer
but a smaller MLP (``HIDDEN``, to fit a few minutes on 2 CPU cores), ``SEEDS`` seeds each, no
augmentation. d3rlpy learns on symgate's encoded network inputs (the normalised FK features), on
minibatches of the same transitions, so the two differ only in the algorithm. symgate trains
through ``symgate train`` (its seeds one vectorised model); d3rlpy runs in ``.venv-bench``
(``bench/d3rlpy_cql_runner.py``), concurrently.

- **Discrete CQL** vs ``DiscreteCQL``: the paper's Table 7 expert setting (lr 1e-4, batch 128, α 5,
  γ 0.95, twin critics, a hard target update every 100 updates), ``DISCRETE_UPDATES`` updates.
  ``--recipes mixed suboptimal`` runs it (and IQL) on those datasets instead (the paper's settings
  of each recipe: α 10 / 5, lr 1e-4 / 5e-4; IQL's expectile, β and batch as Table 2's presets),
  ``--env paper`` on the paper preset's reacher, and
  ``--target-period 6`` with Table 7 quick's 200 hard target updates in 1200 (``--parts discrete``
  skips the continuous parts, ``--variants head-mean`` symgate's as-shipped variant). Such a run
  writes ``correctness_<recipes>-<date>-<host>.*``, beside the expert run's files.
  The two apply α differently over the twin heads: symgate adds CQL-DQN's α-term to each head's
  loss (each head is trained by the published CQL-DQN loss), d3rlpy adds it once, on the mean of
  the heads, whose gradient on each head is half as large. symgate is therefore run twice, with
  the same seeds: as shipped, and with d3rlpy's convention (``cql.penalised_heads: mean``); only
  the latter compares like with like.
- **IQL** vs ``IQL`` and **CQL** vs ``CQL``: the paper's expert settings (IQL: lr 1e-3, batch 64,
  expectile 0.8, β 7, weight clip 100; CQL: lr 1e-4, batch 128, α 5, 10 sampled actions), γ 0.95,
  Polyak target updates (τ = ``POLYAK`` every update: d3rlpy has no hard updates for continuous
  algorithms), ``CONTINUOUS_UPDATES`` updates (CQL fewer: it costs 5x IQL's). CQL's entropy
  weight is fixed at ``CQL_ENTROPY`` on both, and d3rlpy's target is its ``soft_q_backup``,
  min Q̄(s′, a′) - η log π(a′|s′) with a′ ~ π, as symgate's (d3rlpy's default values s′ by the
  mean action, without entropy). Both IQL actors score the data's actions by a Gaussian around
  the tanh-squashed mean (symgate's ``actor_likelihood: tanh-mean``, its default; its CQL actor
  samples the tanh-squashed Gaussian, as d3rlpy's). Differences that stay: d3rlpy's IQL log-std
  is one state-independent parameter (symgate's: a head of the actor); d3rlpy samples and scales
  actions in [-1, 1], symgate in the torque box (the importance corrections differ by a constant,
  which leaves CQL's gradients unchanged).

Measured per seed, on both, with the same code:

- ``E[Q − G]``: min of the twin Q at the data's action minus the discounted return-to-go G, over
  every transition of the dataset (G ∈ [0, 1]: the reward is 1 at the goal);
- discrete: action match, how often the greedy action argmax_a mean_i Qᵢ(s, a) is the data's action;
- success and normalised return (÷ the expert's from the same start, as in the experiment) of the
  deterministic policy in the data's context (``TRAIN_EPISODES`` episodes) and on ``TEST_CONTEXTS``
  held-out rotations, by symgate's own rollout.

Ours is "within the peer's spread" when our seed mean lies within d3rlpy's seed mean ± 2 seed
standard deviations (or equals it, when every d3rlpy seed agrees). Writes
``bench/results/correctness-<date>-<host>.json`` (rows + every seed) and a ``.md`` beside it;
``--parts`` runs some parts only and keeps the others' rows from this host's newest result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_train import D3rlpyRunner, ensure_bench_venv
from common import RESULTS, write_result
from torch import Tensor

from pipeline.experiment.config import EnvPreset
from pipeline.experiment.data import ONE_CONTEXT, DatasetSpec, build_dataset, eval_env_spec, expert_returns
from pipeline.export.export import load_policy
from pipeline.io import load_config
from pipeline.train.bc import BC
from pipeline.train.buffer import OfflineData, load_offline_data
from pipeline.train.config import TrainConfig
from pipeline.train.cql import DiscreteCQL
from pipeline.train.evaluate import evaluation_angles, rollout
from pipeline.train.trainer import build_agent, member_generators, train
from sim.behaviour import RecipeName
from sim.contexts import ContextSetName

SEEDS = 5
DISCRETE_UPDATES = 1200
CONTINUOUS_UPDATES = {"iql": 1000, "cql": 600}  # d3rlpy's CQL: ~0.15 s per update on the shared VM
TARGET_PERIOD = 100
POLYAK = 0.005
CQL_ENTROPY = 1e-3
HIDDEN = (256, 256)  # the paper's [512, 256, 128] costs d3rlpy ~0.36 CPU-s per update and seed on the 2-core VM
TRAIN_EPISODES = 10
TEST_CONTEXTS = 10
ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().with_name("d3rlpy_cql_runner.py")
DEVICE = torch.device("cpu")
PolicyFn = Callable[[Tensor], Tensor]  # (E, B, D) raw observations → (E, B) action indices or (E, B, A) torques


def preset_config(preset: str, updates: int, seeds: int, **overrides: Any) -> TrainConfig:
    """A paper expert preset, no augmentation, ``HIDDEN``, ``updates`` updates, ``seeds`` vectorised seeds."""
    data = load_config(ROOT / "deploy" / "train" / preset, TrainConfig).model_dump(mode="json")
    data["augmentation"] |= {"strategy": "none", "spec": str(ROOT / data["augmentation"]["spec"])}
    data |= {
        "steps": updates,
        "hidden": list(HIDDEN),
        "seeds": seeds,
        "seed": 0,
        "device": DEVICE.type,
        "log_every": updates,
        "checkpoint_every": updates,
        **overrides,
    }
    return TrainConfig.model_validate(data)


@dataclass(frozen=True)
class DiscreteSetting:
    """How the discrete CQL part runs: the reacher preset, the hard target period, symgate's variants, the MLP."""

    env: EnvPreset = "default"
    target_period: int = TARGET_PERIOD
    variants: tuple[str, ...] = ("per-head", "head-mean")
    hidden: tuple[int, ...] = HIDDEN


def discrete_config(updates: int, seeds: int, recipe: RecipeName, setting: DiscreteSetting) -> TrainConfig:
    """The paper's Table 7 preset of ``recipe`` (discrete CQL), with ``setting``'s target period and MLP."""
    return preset_config(
        f"paper-cql-{recipe}.yaml",
        updates,
        seeds,
        target_update_every=setting.target_period,
        hidden=list(setting.hidden),
    )


def continuous_config(algorithm: str, updates: int, seeds: int, recipe: RecipeName = "expert") -> TrainConfig:
    """The paper's ``recipe`` preset of ``algorithm`` (iql or cql), Polyak τ = ``POLYAK`` every update."""
    overrides: dict[str, Any] = {"target_update_every": 1, "target_polyak": POLYAK}
    if algorithm == "cql":
        overrides["cql"] = {"alpha": 5.0, "sampled_actions": 10, "entropy": CQL_ENTROPY}
    return preset_config(f"paper-{algorithm}-{recipe}.yaml", updates, seeds, **overrides)


def export_npz(data: OfflineData, config: TrainConfig, encode: Callable[[Tensor], Tensor], path: Path) -> None:
    """The transitions, encoded into symgate's network inputs, and the shared settings (no pickle)."""
    arrays: dict[str, Any] = {
        "observations": encode(data.observations).numpy(),
        "actions": data.actions.numpy(),
        "rewards": data.rewards.numpy(),
        "next_observations": encode(data.next_observations).numpy(),
        "terminals": data.terminals.numpy(),
        "seeds": np.int64(config.seeds),
        "updates": np.int64(config.steps),
        "gamma": np.float64(config.gamma),
        "batch_size": np.int64(config.batch_size),
        "hidden": np.asarray(config.hidden, dtype=np.int64),
    }
    if data.discrete_torques is not None:
        arrays |= {
            "algo": np.str_("discrete_cql"),
            "n_actions": np.int64(len(data.discrete_torques)),
            "learning_rate": np.float64(config.critic_lr),
            "alpha": np.float64(config.cql.alpha),
            "target_update_interval": np.int64(config.target_update_every),
            "n_critics": np.int64(2),
        }
    else:  # the keys of bench/d3rlpy_runner.py's algorithm_config
        arrays |= {
            "algo": np.str_(config.algorithm),
            "action_low": data.action_low.cpu().numpy(),
            "action_high": data.action_high.cpu().numpy(),
            "polyak": np.float64(config.target_polyak),
            "actor_lr": np.float64(config.actor_lr),
            "critic_lr": np.float64(config.critic_lr),
            "expectile": np.float64(config.iql.expectile),
            "temperature": np.float64(config.iql.temperature),
            "max_weight": np.float64(config.iql.max_weight),
            "cql_alpha": np.float64(config.cql.alpha),
            "cql_samples": np.int64(config.cql.sampled_actions),
            "cql_entropy": np.float64(config.cql.entropy),
            "cql_soft_q_backup": np.bool_(True),
        }
    np.savez(path, **arrays)


def measure(
    q_data: Tensor, policy: PolicyFn, data: OfflineData, spec: dict[str, Any], config: TrainConfig
) -> dict[str, list[float]]:
    """Per-seed E[Q − G] (``q_data``: min twin Q at the data's (s, a), ``(E, N)``) and the rollout metrics."""
    metrics: dict[str, list[float]] = {"q_minus_return_to_go": (q_data - data.returns_to_go).mean(dim=1).tolist()}
    sets: tuple[tuple[ContextSetName, int], ...] = (("train", TRAIN_EPISODES), ("test", TEST_CONTEXTS))
    for name, episodes in sets:
        angles = evaluation_angles(spec, name, episodes)
        outcome = rollout(policy, spec, angles, config.seeds, config.gamma, config.seed, DEVICE)
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
    "q_max": "max Q on the data's (s, a)",
    "action_match": "greedy action = data's action, fraction of expert states",
    "train_success": f"success in the data's context ({TRAIN_EPISODES} episodes)",
    "train_normalised_return": "normalised return in the data's context",
    "test_success": f"success on {TEST_CONTEXTS} held-out rotations",
    "test_normalised_return": f"normalised return on {TEST_CONTEXTS} held-out rotations",
}


#: How the discrete CQL rows name symgate's two variants (the continuous ones have one, symgate as shipped).
VARIANTS = {"per-head": " (symgate as shipped: α per head)", "head-mean": " (symgate with d3rlpy's α on the mean head)"}


def encoder_of(config: TrainConfig, data: OfflineData) -> Callable[[Tensor], Tensor]:
    """symgate's input encoding of raw observations ``(..., D)`` (fitted on the data, the same for every seed)."""
    untrained = build_agent(config, data, member_generators(config), DEVICE).algorithm
    assert not isinstance(untrained, BC)
    encoder = untrained.critic.encoder

    def encode(x: Tensor) -> Tensor:
        with torch.no_grad():
            features: Tensor = encoder(x.reshape(-1, x.shape[-1])[None])[0]
        return features.reshape(*x.shape[:-1], -1)

    return encode


def train_side_by_side(
    python: Path, config: TrainConfig, dataset_id: str, work: Path, name: str, variants: dict[str, TrainConfig]
) -> tuple[D3rlpyRunner, dict[str, Path], dict[str, float]]:
    """d3rlpy trains its seeds in its own process while symgate trains each variant here, one after another.

    Args:
        config: The shared settings (d3rlpy's side, the exported data).
        variants: symgate's variants by name, each its training config (``config`` or a variant of it).

    Returns:
        The ready runner, the run folder of each variant, and training seconds (each variant, ``d3rlpy``).
    """
    data = load_offline_data(dataset_id, DEVICE, config.gamma)
    npz = work / f"{name}.npz"
    export_npz(data, config, encoder_of(config, data), npz)
    runs, seconds = {}, {}
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(D3rlpyRunner, python, npz, work / f"{name}-d3rlpy.log", RUNNER)
        for variant, variant_config in variants.items():
            t0 = time.perf_counter()
            runs[variant] = work / f"run-{name}-{variant}"
            train(variant_config, dataset_id, runs[variant])
            seconds[variant] = time.perf_counter() - t0
        runner = future.result()
    seconds["d3rlpy"] = float(sum(runner.info["train_s"]))
    print(f"{name}: trained " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()), flush=True)
    return runner, runs, seconds


def discrete_part(
    python: Path, work: Path, updates: int, seeds: int, setting: DiscreteSetting, recipe: RecipeName
) -> dict[str, Any]:
    """Discrete CQL on ``recipe``'s data: symgate as shipped and/or with d3rlpy's α convention, vs ``DiscreteCQL``."""
    spec = DatasetSpec(recipe, True, 0, 10, ONE_CONTEXT, TEST_CONTEXTS, env_preset=setting.env)
    dataset_id = build_dataset(spec, work)
    config = discrete_config(updates, seeds, recipe, setting)
    data = load_offline_data(dataset_id, DEVICE, config.gamma)
    encode = encoder_of(config, data)
    head_mean = config.model_copy(update={"cql": config.cql.model_copy(update={"penalised_heads": "mean"})})
    variants = {name: c for name, c in (("per-head", config), ("head-mean", head_mean)) if name in setting.variants}
    name = f"discrete-cql-{recipe}"
    runner, runs, seconds = train_side_by_side(python, config, dataset_id, work, name, variants)
    env_spec = eval_env_spec(dataset_id)
    observations = data.observations[None].expand(seeds, *data.observations.shape)
    actions = data.actions[None].expand(seeds, -1)
    metrics: dict[str, dict[str, list[float]]] = {}

    def record(name: str, q_fn: Callable[[Tensor], Tensor]) -> None:
        with torch.no_grad():
            q = q_fn(observations)  # (2, E, N, n)
        index = actions[None, ..., None].expand(2, *actions.shape, 1)
        q_data = q.gather(-1, index).squeeze(-1).min(dim=0).values

        def policy(raw: Tensor) -> Tensor:
            greedy: Tensor = q_fn(raw).mean(dim=0).argmax(dim=-1)
            return greedy

        metrics[name] = measure(q_data, policy, data, env_spec, config)
        metrics[name]["action_match"] = (q.mean(dim=0).argmax(dim=-1) == actions).float().mean(dim=1).tolist()
        metrics[name]["q_max"] = q_data.max(dim=1).values.tolist()

    with runner:
        for variant, run in runs.items():
            trained = load_policy(run).agent.algorithm
            assert isinstance(trained, DiscreteCQL)
            record(variant, trained.critic)

        def theirs(raw: Tensor) -> Tensor:
            reply = runner.send({"features": encode(raw).tolist()})
            return torch.tensor(reply["q"], dtype=torch.float32).transpose(0, 1)  # (S, 2, B, n) → (2, S, B, n)

        record("d3rlpy", theirs)
        version = runner.info["d3rlpy"]
    rtg = data.returns_to_go
    title = (
        f"DiscreteCQL on {recipe} data ({setting.env} reacher), MLP {list(config.hidden)}, lr {config.critic_lr:g}, "
        f"batch {config.batch_size}, "
        f"α {config.cql.alpha:g}, γ {config.gamma:g}, hard target update every {config.target_update_every}"
    )
    data_note = (
        f"The data's G (behaviour's discounted return-to-go): mean {rtg.mean():.3f}, max {rtg.max():.3f}, "
        f"{(rtg == 0).float().mean():.0%} of transitions 0 (the episode never reaches the goal); rewards are 1 at "
        f"the goal, so any Q ≤ 1 and a calibrated Q — even the greedy (optimal) policy's, which beats the "
        f"behaviour's — has E[Q - G] ≤ E[1 - G] = {1 - rtg.mean():.3f}."
    )
    return {
        "metrics": metrics,
        "seconds": seconds,
        "d3rlpy": version,
        "updates": updates,
        "title": title,
        "algorithm": "discrete CQL",
        "recipe": recipe,
        "note": data_note,
    }


def continuous_part(
    python: Path, work: Path, algorithm: str, updates: int, seeds: int, recipe: RecipeName, env: EnvPreset
) -> dict[str, Any]:
    """IQL or CQL on continuous torques vs d3rlpy's ``IQL`` / ``CQL``, on ``recipe``'s data of ``env``'s reacher."""
    dataset_id = build_dataset(DatasetSpec(recipe, False, 0, 10, ONE_CONTEXT, TEST_CONTEXTS, env_preset=env), work)
    config = continuous_config(algorithm, updates, seeds, recipe)
    data = load_offline_data(dataset_id, DEVICE, config.gamma)
    encode = encoder_of(config, data)
    variants = {"symgate": config}
    name = algorithm if recipe == "expert" and env == "default" else f"{algorithm}-{recipe}-{env}"
    runner, runs, seconds = train_side_by_side(python, config, dataset_id, work, name, variants)
    spec = eval_env_spec(dataset_id)
    observations = data.observations[None].expand(seeds, *data.observations.shape)
    actions = data.actions[None].expand(seeds, *data.actions.shape)
    metrics: dict[str, dict[str, list[float]]] = {}
    with runner:
        agent = load_policy(runs["symgate"]).agent
        with torch.no_grad():
            q_ours = agent.q(observations, actions)
        metrics["symgate"] = measure(q_ours, agent.act, data, spec, config)

        def ask(raw: Tensor, acts: Tensor | None = None) -> Tensor:
            request: dict[str, Any] = {"features": encode(raw).tolist()}
            if acts is not None:
                request["actions"] = acts.tolist()
            reply = runner.send(request)
            return torch.tensor(reply["q" if acts is not None else "action"], dtype=torch.float32)

        q_theirs = ask(observations, actions).min(dim=1).values  # (S, 2, N) → (S, N)
        metrics["d3rlpy"] = measure(q_theirs, ask, data, spec, config)
        version = runner.info["d3rlpy"]
    result = {"metrics": metrics, "seconds": seconds, "d3rlpy": version, "updates": updates}
    return result | {"title": continuous_title(config, recipe, env), "algorithm": algorithm.upper(), "recipe": recipe}


def continuous_title(config: TrainConfig, recipe: RecipeName, env: EnvPreset) -> str:
    """A continuous part's heading: the data and every hyper-parameter both libraries were given."""
    common = f"lr {config.actor_lr:g}, batch {config.batch_size}, γ {config.gamma:g}, Polyak τ {config.target_polyak:g}"
    if config.algorithm == "cql":
        cql = config.cql
        specific = f"α {cql.alpha:g}, {cql.sampled_actions} sampled actions, η {cql.entropy:g} (soft target)"
    else:
        iql = config.iql
        specific = f"expectile {iql.expectile:g}, β {iql.temperature:g}, weight clip {iql.max_weight:g}"
    return f"{config.algorithm.upper()} on {recipe} data ({env} reacher), {common}, {specific}"


#: A part's own fields that each of its rows carries as ``part_<field>`` (so a later run can carry the part over).
PART_FIELDS = ("title", "note", "algorithm", "recipe", "carried_from")


def rows_of(part: str, variant: str, peer: str, result: dict[str, Any], note: str) -> list[dict[str, Any]]:
    """One row per metric: symgate's ``variant`` against d3rlpy's ``peer``."""
    rows = []
    for name, metric in METRICS.items():
        if name not in result["metrics"][variant]:
            continue
        mine, theirs = result["metrics"][variant][name], result["metrics"]["d3rlpy"][name]
        reference = float(np.mean(theirs))
        label = metric.replace("expert", result.get("recipe", "expert"))
        rows.append(
            {
                "metric": f"{part}{VARIANTS.get(variant, '')}: {label}",
                "part": part,
                "variant": variant,
                "symgate": float(np.mean(mine)),
                "reference": reference,
                "reference_name": f"d3rlpy {result['d3rlpy']} {peer}, {note}",
                "ratio": float(np.mean(mine)) / reference if reference else float("inf"),
                "target": "within d3rlpy's seed mean ± 2 sd",
                "within_spread": within(mine, theirs),
                "updates": result["updates"],
                "metric_key": name,
                **{f"part_{key}": result[key] for key in PART_FIELDS if key in result},
                "symgate_seeds": mine,
                "reference_seeds": theirs,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], parts: dict[str, dict[str, Any]], seeds: int) -> str:
    """Every part's rows with every seed, and how they were measured."""
    version = next(iter(parts.values()))["d3rlpy"]
    lines = [
        f"# Correctness: symgate vs d3rlpy {version}, {seeds} seeds each, each part side by side in one run",
        "",
        "Same datasets (10 trajectories, one context; built by the experiment's path), same inputs "
        f"(symgate's encoded features), same minibatch size and hyper-parameters, MLP {list(HIDDEN)} (unless a part "
        "names another), 2 critics, "
        "no augmentation, on a shared 2-core VM (symgate's seeds one vectorised model, trained while d3rlpy "
        "trains its seeds one after another in another process). Setup and the differences that remain: "
        "`bench/bench_correctness.py`'s docstring.",
        "",
    ]
    for part, result in parts.items():
        seconds = ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items())
        title = result.get("title", part)
        lines += [f"## {part}: {title}, {result['updates']} updates", "", f"Training wall time: {seconds}.", ""]
        lines += [result["note"], ""] if "note" in result else []
        if "carried_from" in result:
            lines += [f"Not rerun: measured by the run of {result['carried_from']} (`--parts` left it out).", ""]
        lines += [
            "| symgate variant | metric | symgate mean ± sd | d3rlpy mean ± sd | within d3rlpy's spread "
            "| symgate seeds | d3rlpy seeds |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in (r for r in rows if r["part"] == part):
            ours, theirs = row["symgate_seeds"], row["reference_seeds"]
            lines.append(
                f"| {row['variant']} | {row['metric'].rsplit(': ', 1)[1]} "
                f"| {np.mean(ours):.3f} ± {np.std(ours, ddof=1):.3f} "
                f"| {np.mean(theirs):.3f} ± {np.std(theirs, ddof=1):.3f} | {'yes' if row['within_spread'] else 'no'} "
                f"| {', '.join(f'{v:.3f}' for v in ours)} | {', '.join(f'{v:.3f}' for v in theirs)} |"
            )
        lines.append("")
    lines += [
        "Within the spread: |symgate mean − d3rlpy mean| ≤ 2 × d3rlpy's seed standard deviation. Discrete CQL's "
        "`per-head` is symgate as shipped (α-term on each twin head, each head trained by the published CQL-DQN "
        "loss); `head-mean` is symgate with d3rlpy's convention (α-term once on the mean head, half the gradient "
        "per head): only `head-mean` compares like with like."
    ]
    return "\n".join(lines) + "\n"


#: ``--parts`` names of the parts, in the order they run and are written.
PART_NAMES = {"discrete": "discrete CQL", "iql": "IQL", "cql": "CQL"}


def carried_parts(name: str, measured: set[str]) -> dict[str, dict[str, Any]]:
    """The parts of this host's newest ``name`` result that this run does not measure, rebuilt from its rows.

    A run of some ``--parts`` then rewrites a complete result (``bench/summary.py`` reads the newest file
    only). Every row carries its part's update count, title, note, algorithm, recipe and, for a part that run
    carried over itself, the date of the run that measured it (:func:`rows_of`).
    """
    found = sorted(RESULTS.glob(f"{name}-*-{platform.node()}.json"))
    if not found:
        return {}
    previous = json.loads(found[-1].read_text())
    parts: dict[str, dict[str, Any]] = {}
    for row in previous["rows"]:
        if row["part"] in measured:
            continue
        part = parts.setdefault(
            row["part"],
            {
                "metrics": {},
                "d3rlpy": row["reference_name"].split()[1],
                "updates": row["updates"],
                "carried_from": previous["date"],
                "seconds": {
                    key.split(" train_s ", 1)[1]: values[0]
                    for key, values in previous["samples"].items()
                    if key.startswith(f"{row['part']} train_s ")
                },
            }
            | {key: row[f"part_{key}"] for key in PART_FIELDS if f"part_{key}" in row},
        )
        part["metrics"].setdefault(row["variant"], {})[row["metric_key"]] = row["symgate_seeds"]
        part["metrics"].setdefault("d3rlpy", {})[row["metric_key"]] = row["reference_seeds"]
    return parts


def write(parts: dict[str, dict[str, Any]], seeds: int, name: str) -> None:
    """The rows of the parts measured so far, as ``<name>-<date>-<host>.json`` and ``.md``."""
    peers = {"discrete CQL": "DiscreteCQL", "IQL": "IQL", "CQL": "CQL"}
    notes = {"discrete CQL": "n_critics 2", "IQL": "", "CQL": "soft_q_backup"}
    rows = []
    for part, result in parts.items():
        algorithm = result.get("algorithm", part)
        note = ", ".join(n for n in (notes[algorithm], "same data and inputs") if n)
        for variant in (v for v in result["metrics"] if v != "d3rlpy"):
            rows += rows_of(part, variant, peers[algorithm], result, note)
    samples = {f"{part} train_s {k}": [v] for part, result in parts.items() for k, v in result["seconds"].items()}
    out = write_result(name, rows, samples)
    out.with_suffix(".md").write_text(markdown(rows, parts, seeds))


def main() -> None:
    """Build the data, train every learner on both sides, measure them, write the result files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=SEEDS, help="Seeds per learner (at least 2: a spread).")
    parser.add_argument("--scale", type=float, default=1.0, help="Multiply every update count (a smoke run: 0.05).")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=list(PART_NAMES),
        default=list(PART_NAMES),
        help="Parts to run; the others' rows are kept from this host's newest result of the same recipes.",
    )
    parser.add_argument(
        "--recipes",
        nargs="+",
        choices=("expert", "mixed", "suboptimal"),
        default=["expert"],
        help="Datasets of discrete CQL and IQL, each with the paper's preset of its recipe (CQL: expert only).",
    )
    parser.add_argument(
        "--env", choices=("default", "paper"), default="default", help="Reacher preset of discrete CQL and IQL."
    )
    parser.add_argument("--target-period", type=int, default=TARGET_PERIOD, help="Discrete CQL's hard target period.")
    parser.add_argument("--hidden", type=int, nargs="+", default=list(HIDDEN), help="Discrete CQL's MLP, both sides.")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=tuple(VARIANTS),
        default=list(VARIANTS),
        help="symgate's discrete CQL variants.",
    )
    args = parser.parse_args()
    setting = DiscreteSetting(args.env, args.target_period, tuple(args.variants), tuple(args.hidden))
    name = "correctness" if args.recipes == ["expert"] else "_".join(["correctness", *args.recipes])
    started = time.perf_counter()
    python = ensure_bench_venv()
    work = Path(tempfile.mkdtemp(prefix="symgate-bench-correctness-"))
    os.environ["MINARI_DATASETS_PATH"] = str(work / "datasets")
    seeds = args.seeds

    def scaled(updates: int) -> int:
        return max(1, round(updates * float(args.scale)))

    jobs: dict[str, Callable[[], dict[str, Any]]] = {}
    if "discrete" in args.parts:
        for recipe in args.recipes:
            part = "discrete CQL" if recipe == "expert" else f"discrete CQL on {recipe} data"
            jobs[part] = partial(discrete_part, python, work, scaled(DISCRETE_UPDATES), seeds, setting, recipe)
    if "iql" in args.parts:
        for recipe in args.recipes:
            part = "IQL" if recipe == "expert" and args.env == "default" else f"IQL on {recipe} data"
            steps = scaled(CONTINUOUS_UPDATES["iql"])
            jobs[part] = partial(continuous_part, python, work, "iql", steps, seeds, recipe, args.env)
    if "cql" in args.parts:  # the expert data of the default reacher only (its α is the expert preset's)
        jobs["CQL"] = partial(
            continuous_part, python, work, "cql", scaled(CONTINUOUS_UPDATES["cql"]), seeds, "expert", "default"
        )
    carried = carried_parts(name, set(jobs))
    parts: dict[str, dict[str, Any]] = {}
    try:
        for part, job in jobs.items():  # the files are rewritten after every part: a long run keeps what it has
            parts[part] = job()
            everything = carried | parts
            order = list(PART_NAMES.values())
            write(
                {p: everything[p] for p in sorted(everything, key=lambda p: order.index(p) if p in order else -1)},
                seeds,
                name,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
