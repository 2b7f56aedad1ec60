"""What the full paper protocol (``deploy/experiment/paper.yaml``) costs here, from short timed cells.

One DAC-Output cell (expert data) of Tables 2 (IQL), 7 (CQL) and 2c (continuous IQL) is trained
with the protocol's config (its presets, 20 seeds as one vectorised model) for only ``UPDATES``
updates, on one torch thread (as each of the runner's workers), and evaluated as the experiment
does (rollouts, then the expert normaliser) on ``EVAL_SHARE`` of the protocol's 100 test + 20 train
episodes; evaluation cost is linear in the episodes, so it is scaled up. Side by side in the same
run, the same cell with the quick protocol's 3 seeds is the reference. Every member trains on one
shared dataset (the compute of an update does not depend on which dataset a member samples). One
dataset build (fleet → bag → Minari) per action type is timed too.

Costs are **CPU seconds of this process** (``time.process_time``), which a machine shared with other
work distorts far less than wall time; wall seconds are recorded beside them. After this few
updates most evaluation episodes fail and run all 200 steps, so the evaluation cost is an upper
bound. The extrapolation: every table's jobs at 20000 updates (Table 8 at Table 2's IQL rate,
``tune-lambda`` as 3 λ × 3 recipes for Tables 2 and 7, evaluated on 100 validation contexts) plus
120 datasets, on this machine's cores with one job per core; Table 1 (distillation) is not included.
Writes ``bench/results/protocol-<date>-<host>.json``.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import write_result

from pipeline import REPO
from pipeline.experiment.config import ExperimentConfig, OfflineTable
from pipeline.experiment.data import build_dataset, eval_env_spec, expert_returns
from pipeline.experiment.offline_rl import TrainingJob, plan_training
from pipeline.io import load_config
from pipeline.train import train

UPDATES = int(os.environ.get("SYMGATE_BENCH_UPDATES", "60"))
EVAL_SHARE = 0.1  # 10 test + 2 train episodes instead of 100 + 20
CELLS: tuple[OfflineTable, ...] = ("2", "7", "2c")
#: Per table: its updates come from its own settings, its per-update cost from this measured cell.
_RATES: tuple[tuple[str, OfflineTable, str], ...] = (
    ("2", "2", "2"),
    ("7", "7", "7"),
    ("2c", "2c", "2c"),
    ("8", "8", "2"),
)
FULL = load_config(REPO / "deploy" / "experiment" / "paper.yaml", ExperimentConfig)


def _job(table: OfflineTable, seeds: int, work: Path) -> TrainingJob:
    offline = FULL.offline_rl.model_copy(
        update={
            "recipes": ("expert",),
            "strategies": ("dac-output",),
            "steps": dict.fromkeys(CELLS, UPDATES),
            "target_updates": max(1, UPDATES // 100),
        }
    )
    experiment = FULL.model_copy(
        update={
            "seeds": seeds,
            "offline_rl": offline,
            "test_contexts": round(FULL.test_contexts * EVAL_SHARE),
            "train_episodes": round(FULL.train_episodes * EVAL_SHARE),
        }
    )
    (job,) = plan_training(table, experiment, work / f"s{seeds}", device="cpu")
    return job


def _time_cell(job: TrainingJob, dataset_id: str) -> dict[str, float]:
    """CPU (and wall) seconds per update, and of the scaled-up evaluation, of one job."""
    marks: list[tuple[int, float, float]] = []
    log_every = max(1, UPDATES // 10)
    config = job.config.model_copy(update={"log_every": log_every})
    wall, cpu = time.perf_counter(), time.process_time()
    summary = train(
        config,
        [dataset_id] * config.seeds,
        job.run_dir,
        on_progress=lambda step, _: marks.append((step, time.process_time(), time.perf_counter())),
    )
    spec = eval_env_spec(dataset_id)
    for evaluation in summary["evaluation"].values():
        expert_returns(spec, np.radians(np.asarray(evaluation["context_deg"])), config.seed, config.gamma)
    end_cpu, end_wall = time.process_time(), time.perf_counter()
    steps = [(b[0] - a[0], b[1] - a[1], b[2] - a[2]) for a, b in itertools.pairwise(marks[1:])]
    cpu_per_update = statistics.median(c / n for n, c, _ in steps)  # from the second interval on: warmed up
    wall_per_update = statistics.median(w / n for n, _, w in steps)
    return {
        "cpu_s_per_update": cpu_per_update,
        "wall_s_per_update": wall_per_update,
        "eval_cpu_s": (end_cpu - marks[-1][1]) / EVAL_SHARE,
        "eval_wall_s": (end_wall - marks[-1][2]) / EVAL_SHARE,
        "job_cpu_s": end_cpu - cpu,
        "job_wall_s": end_wall - wall,
    }


def main() -> None:
    torch.set_num_threads(1)  # as each of the runner's worker processes
    work = Path(os.environ.get("SYMGATE_BENCH_WORK") or tempfile.mkdtemp(prefix="symgate-bench-protocol-"))
    os.environ["MINARI_DATASETS_PATH"] = str(work / "datasets")
    cells: dict[str, dict[str, dict[str, float]]] = {}
    build: dict[str, dict[str, float]] = {}
    for table in CELLS:
        spec = _job(table, FULL.seeds, work).datasets[0]
        wall, cpu = time.perf_counter(), time.process_time()
        dataset_id = build_dataset(spec, work)
        kind = "continuous" if table == "2c" else "discrete"
        build.setdefault(kind, {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall})
        for seeds in (FULL.seeds, 3):
            cells.setdefault(table, {})[str(seeds)] = _time_cell(_job(table, seeds, work), dataset_id)
            print(table, seeds, cells[table][str(seeds)], flush=True)
    per_job = {
        name: FULL.offline_rl.steps_of(table) * cells[rate][str(FULL.seeds)]["cpu_s_per_update"]
        + cells[rate][str(FULL.seeds)]["eval_cpu_s"]
        for name, table, rate in _RATES
    }
    recipes, grid = len(FULL.offline_rl.recipes), len(FULL.offline_rl.lambda_grid)
    strategies, critic = len(FULL.offline_rl.strategies), len(FULL.offline_rl.critic_strategies)
    jobs = {"2": recipes * strategies, "7": recipes * strategies, "2c": recipes * strategies, "8": recipes * critic}
    jobs |= {"tune-2": recipes * grid, "tune-7": recipes * grid}
    core_s = {name: count * per_job[name.removeprefix("tune-")] for name, count in jobs.items()}
    core_s["datasets"] = FULL.seeds * recipes * (build["discrete"]["cpu_s"] + build["continuous"]["cpu_s"])
    cores = os.cpu_count() or 1
    total_core_h = sum(core_s.values()) / 3600
    extrapolation: dict[str, Any] = {
        "jobs": jobs,
        "cpu_h_per_job": {name: value / 3600 for name, value in per_job.items()},
        "cpu_h": {name: value / 3600 for name, value in core_s.items()},
        "total_cpu_h": total_core_h,
        "cores": cores,
        "wall_h_on_idle_cores": total_core_h / cores,
        "pieces_of_2_5_h": total_core_h / cores / 2.5,
        "excluded": "Table 1 (distillation)",
        "load_average_at_end": os.getloadavg(),
    }
    rows = [
        {
            "metric": f"table {table} cell: CPU s per update, {FULL.seeds} seeds vectorised (1 thread)",
            "symgate": cells[table][str(FULL.seeds)]["cpu_s_per_update"],
            "reference": cells[table]["3"]["cpu_s_per_update"],
            "reference_name": "the same cell with 3 seeds (quick protocol), same run",
            "ratio": cells[table][str(FULL.seeds)]["cpu_s_per_update"] / cells[table]["3"]["cpu_s_per_update"],
            "target": None,
        }
        for table in CELLS
    ]
    samples = {f"{table}-{seeds}": [value["job_cpu_s"]] for table, by in cells.items() for seeds, value in by.items()}
    out = write_result("protocol", rows, samples)
    result = json.loads(out.read_text())
    result.update(cells=cells, dataset_build=build, extrapolation=extrapolation, bench_updates=UPDATES)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(extrapolation, indent=2))


if __name__ == "__main__":
    main()
