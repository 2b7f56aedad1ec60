"""The quantity a calibrated Q should match on mixed and suboptimal data: the expert's value, not G.

``E[Q - G]`` (Table 7's calibration, ``bench/bench_correctness.py``) compares Q(s, a) with the
behaviour's discounted return-to-go G from (s, a). CQL's target bootstraps from the greedy action,
so a calibrated Q estimates a greedy policy's value, which on ε-greedy data exceeds G legitimately.
This measures by how much, on the datasets of ``bench_correctness.py --recipes ... --env paper``
(seed 0, 10 trajectories in context 0): for every transition (s, a), the data's action is replayed
in PyBullet from s (its joint positions and velocities, in its context) and then the greedy expert
acts until the goal or the time limit (:func:`pipeline.experiment.distillation.expert_action_values`):

    Q^E(s, a) = γ^(k-1) if the goal is reached at step k, else 0,

the value of taking the data's action and then following the expert (a lower bound on Q*(s, a)).
The reward is 1 at the goal and 0 elsewhere, so every value lies in [0, 1] and E[1 - G] bounds
any legitimate E[Q - G]. Writes ``results/paper-env/expert-value.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from pipeline.experiment.data import ONE_CONTEXT, DatasetSpec, build_dataset, eval_env_spec
from pipeline.experiment.distillation import expert_action_values
from pipeline.io import atomic_write_text
from pipeline.train.buffer import load_offline_data

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "paper-env" / "expert-value"
GAMMA = 0.95
TEST_CONTEXTS = 10  # as bench_correctness.py: the same dataset ids and contents


def measure(recipe: str, work: Path) -> dict[str, Any]:
    """Q^E and G on every transition of ``recipe``'s paper-preset dataset, summarised."""
    spec = DatasetSpec(recipe, True, 0, 10, ONE_CONTEXT, TEST_CONTEXTS, env_preset="paper")  # type: ignore[arg-type]
    dataset_id = build_dataset(spec, work)
    data = load_offline_data(dataset_id, torch.device("cpu"), GAMMA)
    observations, actions = data.observations.numpy(), data.actions.numpy()
    q_expert = expert_action_values(
        observations, data.observation_names, eval_env_spec(dataset_id), GAMMA, actions=actions
    )
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
        "expert_fails": float((q_expert == 0).mean()),
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
        "`bench/expert_value.py` (its docstring says how): Q^E(s, a) = γ^(k-1) when the data's action and "
        "then the greedy expert reach the goal at step k (0 if never), replayed in PyBullet from s, against G, "
        f"the behaviour's discounted return-to-go, over every transition; γ = {GAMMA}; rewards 1 at the goal, "
        "so every value lies in [0, 1].",
        "",
        "| recipe | transitions | E[G] | E[Q^E] | E[Q^E - G] | max (Q^E - G) | E[1 - G] | expert fails |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['transitions']} | {r['mean_G']:.3f} | {r['mean_Q_expert']:.3f} "
            f"| {r['mean_Q_expert_minus_G']:.3f} | {r['max_Q_expert_minus_G']:.3f} | {r['bound_mean_1_minus_G']:.3f} "
            f"| {r['expert_fails']:.1%} |"
        )
    atomic_write_text(OUT.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
