"""The quantity a calibrated Q should match on mixed and suboptimal data: the expert's value, not G.

``E[Q - G]`` (Table 7's calibration, ``bench/bench_correctness.py``) compares Q(s, a) with the
behaviour's discounted return-to-go G from (s, a). CQL's target bootstraps from the greedy action,
so a calibrated Q estimates a greedy policy's value, which on ε-greedy data exceeds G legitimately.
This measures by how much, on the datasets of ``bench_correctness.py --recipes ... --env paper``
(seed 0, 10 trajectories in context 0): for every transition (s, a, r, s′, d) the greedy expert is
rolled out from s′ (its joint positions and velocities, a fresh 200-step limit) and

    Q^E(s, a) = r + γ(1 - d) · V^E(s′),       V^E(s′) = γ^(k-1) if the expert reaches the goal at step k, else 0,

the value of taking the data's action and then following the expert (a lower bound on Q*(s, a)).
The reward is 1 at the goal and 0 elsewhere, so every value lies in [0, 1] and E[1 - G] bounds
any legitimate E[Q - G]. Writes ``results/paper-env/expert-value.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from pipeline.experiment.data import ONE_CONTEXT, DatasetSpec, build_dataset, eval_env_spec
from pipeline.io import atomic_write_text
from pipeline.train.buffer import load_offline_data
from sim.behaviour import make_expert

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "paper-env" / "expert-value"
GAMMA = 0.95
TEST_CONTEXTS = 10  # as bench_correctness.py: the same dataset ids and contents


def expert_value(env: Any, expert: Any, observation: np.ndarray, gamma: float) -> float:
    """V^E(s′): the greedy expert's discounted return from the raw observation ``s′`` (context from its goal)."""
    joints = len(observation) // 2 - 1
    goal = observation[2 * joints :]
    options = {
        "context": math.atan2(float(goal[1]), float(goal[0])),
        "joint_position": observation[:joints],
        "joint_velocity": observation[joints : 2 * joints],
    }
    o, _ = env.reset(seed=0, options=options)
    rng = np.random.default_rng(0)  # unused by the greedy expert
    for k in range(env.unwrapped.config.max_episode_steps):
        o, reward, terminated, truncated, _ = env.step(expert(o, rng))
        if terminated:
            return float(reward) * gamma**k
        if truncated:
            break
    return 0.0


def measure(recipe: str, work: Path) -> dict[str, Any]:
    """Q^E and G on every transition of ``recipe``'s paper-preset dataset, summarised."""
    spec = DatasetSpec(recipe, True, 0, 10, ONE_CONTEXT, TEST_CONTEXTS, env_preset="paper")  # type: ignore[arg-type]
    dataset_id = build_dataset(spec, work)
    data = load_offline_data(dataset_id, torch.device("cpu"), GAMMA)
    env_spec = eval_env_spec(dataset_id)
    env = gym.make(env_spec["id"], **env_spec.get("kwargs", {}))
    expert = make_expert(env.unwrapped)  # type: ignore[arg-type]
    nexts = data.next_observations.numpy().astype(np.float64)
    values = np.array([expert_value(env, expert, s, GAMMA) for s in nexts])
    env.close()
    rewards, terminals = data.rewards.numpy(), data.terminals.numpy()
    q_expert = rewards + GAMMA * (1.0 - terminals) * values
    g = data.returns_to_go.numpy()
    return {
        "recipe": recipe,
        "dataset": dataset_id,
        "transitions": len(g),
        "mean_G": float(g.mean()),
        "mean_Q_expert": float(q_expert.mean()),
        "mean_Q_expert_minus_G": float((q_expert - g).mean()),
        "max_Q_expert_minus_G": float((q_expert - g).max()),
        "bound_mean_1_minus_G": float((1.0 - g).mean()),
        "expert_fails_from_s_next": float((values == 0).mean()),
    }


def main() -> None:
    """Measure each recipe, write the JSON and a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--recipes", nargs="+", default=["mixed", "suboptimal"], choices=("expert", "mixed", "suboptimal")
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="symgate-expert-value-"))
    os.environ["MINARI_DATASETS_PATH"] = str(work / "datasets")
    try:
        rows = [measure(recipe, work) for recipe in args.recipes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT.with_suffix(".json"), json.dumps({"gamma": GAMMA, "rows": rows}, indent=2) + "\n")
    lines = [
        "# The expert's value vs the behaviour's return-to-go on the paper preset's CQL datasets",
        "",
        "`bench/expert_value.py` (its docstring says how): Q^E(s, a) = r + γ(1 - d)·V^E(s′), the data's "
        "action then the greedy expert, against G, the behaviour's discounted return-to-go, over every "
        f"transition; γ = {GAMMA}; rewards 1 at the goal, so every value lies in [0, 1].",
        "",
        "| recipe | transitions | E[G] | E[Q^E] | E[Q^E - G] | max (Q^E - G) | E[1 - G] | expert fails from s′ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['transitions']} | {r['mean_G']:.3f} | {r['mean_Q_expert']:.3f} "
            f"| {r['mean_Q_expert_minus_G']:.3f} | {r['max_Q_expert_minus_G']:.3f} | {r['bound_mean_1_minus_G']:.3f} "
            f"| {r['expert_fails_from_s_next']:.1%} |"
        )
    atomic_write_text(OUT.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
