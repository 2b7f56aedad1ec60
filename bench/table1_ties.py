"""Why Table 1's two targets differ already at η = 0.01: the expert's tied action values.

Table 1 distils a Q-network onto the expert's action values Q(s, ·) minus η on every non-greedy
action (symmetric) or on the non-greedy actions of a C4-rotating subset (asymmetric), then rolls
out its greedy policy (:mod:`pipeline.experiment.distillation`). Where another action's Q equals
the expert's own, only the penalty separates them. This measures, on Table 1's dataset states
(``--seeds`` fresh C4 expert datasets of the paper preset, as ``symgate experiment paper --table 1``
builds them), how often the expert's Q ties or is beaten, and for each target and η in how many
states a non-greedy action's target still ties or beats the expert's action:

    rival(s) = ∃ a ≠ a_E(s): Q̂(s, a) ≥ Q̂(s, a_E(s)),   margin(s) = min_{a ≠ a_E} Q̂(s, a_E) − Q̂(s, a).

Writes ``results/paper-env/table1-ties.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.experiment.config import ExperimentConfig
from pipeline.experiment.data import build_dataset
from pipeline.experiment.distillation import (
    TARGET_KINDS,
    dataset_specs,
    expert_action_values,
    load_distillation_data,
    non_greedy,
    pessimistic_target,
)
from pipeline.io import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "results" / "paper-env" / "seeds50-t1" / "experiment.yaml"
OUT = ROOT / "results" / "paper-env" / "table1-ties"
TIE = 1e-9  # rollout values are γ^(k-1): equal steps-to-goal give bit-equal values


def measure(seeds: int, work: Path) -> dict[str, Any]:
    """The ties of the expert's Q on ``seeds`` Table 1 datasets, and the rivals each target leaves."""
    experiment = ExperimentConfig.model_validate(yaml.safe_load(CONFIG.read_text(encoding="utf-8")))
    experiment = experiment.model_copy(update={"distillation_seeds": seeds})
    specs = dataset_specs(experiment)
    for spec in specs:
        build_dataset(spec, work)
    data = load_distillation_data(
        specs, experiment.gamma, lambda items: [expert_action_values(*item) for item in items]
    )
    q, greedy = data.q_values, data.greedy
    others = non_greedy(q, greedy)
    own = np.take_along_axis(q, greedy[:, None], axis=1)
    tied = others & (np.abs(q - own) <= TIE)
    rows = []
    for kind in TARGET_KINDS:
        for eta in experiment.distillation.etas:
            target = pessimistic_target(kind, q, eta, greedy, data.observations, data.observation_names)
            own_target = np.take_along_axis(target, greedy[:, None], axis=1)
            margin = np.where(others, own_target - target, np.inf).min(axis=1)
            rows.append(
                {
                    "target": kind,
                    "eta": eta,
                    "rival": float((margin <= TIE).mean()),
                    "median_margin": float(np.median(margin)),
                }
            )
    return {
        "seeds": seeds,
        "states": len(q),
        "tied_actions_per_state": float(tied.sum(axis=1).mean()),
        "states_with_a_tie": float(tied.any(axis=1).mean()),
        "states_with_a_better_action": float((others & (q > own + TIE)).any(axis=1).mean()),
        "targets": rows,
    }


def main() -> None:
    """Measure, write the JSON and a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=5, help="Table 1 datasets to measure (seeds 0 … N−1).")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="symgate-table1-ties-"))
    os.environ["MINARI_DATASETS_PATH"] = str(work / "datasets")
    try:
        result = measure(args.seeds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    atomic_write_text(OUT.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    lines = [
        "# Ties in the expert's action values on Table 1's dataset states (paper preset)",
        "",
        f"`bench/table1_ties.py` (its docstring says how): seeds 0–{result['seeds'] - 1}, {result['states']} states. "
        f"Per state, {result['tied_actions_per_state']:.2f} non-greedy actions have the expert's own Q "
        f"({result['states_with_a_tie']:.0%} of states have at least one) and "
        f"{result['states_with_a_better_action']:.1%} have a strictly better one.",
        "",
        "| target | η_max | states where a non-greedy action's target ties or beats the expert's | median margin |",
        "|---|---|---|---|",
    ]
    for row in result["targets"]:
        lines.append(f"| {row['target']} | {row['eta']:g} | {row['rival']:.0%} | {row['median_margin']:.3g} |")
    atomic_write_text(OUT.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
