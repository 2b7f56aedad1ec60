"""``symgate experiment paper``: build the datasets, run a table's jobs over worker processes, write it.

Jobs are independent (one (recipe, strategy) cell with all its seeds vectorised, or one seed's
action values for Table 1), so they run in parallel worker processes or Ray tasks, each with one
torch thread; their results come back as plain numbers and are aggregated in this process, in job
order, so the tables do not depend on what ran the jobs. On Ray, a training job asks for one GPU
when ``--device cuda`` is given and for one CPU otherwise.

Runs resume (:mod:`~pipeline.experiment.offline_rl`): datasets and finished training jobs whose
config hashes match are reused, so a table can be computed over several runs. With a time budget
(``stop_after``) no dataset build or training job starts once it is spent; the jobs already
running finish and are saved, and the table is written by the run that completes its last job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pipeline.executor import LOCAL, ONE_CPU, Executor, Resources, run_unordered
from pipeline.experiment.behaviour import behaviour_config
from pipeline.experiment.config import ExperimentConfig, OfflineTable, TableName
from pipeline.experiment.data import ONE_CONTEXT, DatasetSpec, build_dataset, dataset_is_built
from pipeline.experiment.distillation import (
    TARGET_KINDS,
    dataset_specs,
    expert_action_values,
    load_distillation_data,
    run_distillation,
)
from pipeline.experiment.offline_rl import PRESETS, TrainingJob, cached_result, plan_training, run_training
from pipeline.experiment.report import build_report, write_report
from pipeline.experiment.tuning import finish_tuning, plan_tuning
from sim.behaviour import BehaviourConfig

#: ``progress(description, total)`` → a context manager yielding ``advance()``.
ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[..., None]]]
T = TypeVar("T")


class TimeBudgetError(Exception):
    """The time budget ran out before a table's last job: the finished ones are saved for the next run.

    Attributes:
        table: The table that was cut short.
        left: What is left for a later run, e.g. ``3 training job(s)``.
    """

    def __init__(self, table: str, left: str) -> None:
        super().__init__(f"table {table}: the time budget ran out with {left} left")
        self.table, self.left = table, left


@contextmanager
def _silent(description: str, total: int) -> Iterator[Callable[..., None]]:
    yield lambda steps=1: None


def _init_worker(datasets: str) -> None:
    import torch

    os.environ["MINARI_DATASETS_PATH"] = datasets
    torch.set_num_threads(1)  # jobs run side by side, one per core


class Runner:
    """Runs tables of the paper's protocol.

    Args:
        experiment: Seeds, steps and evaluation sizes.
        mode: ``quick`` or ``full`` (recorded, and the results subfolder).
        work: Folder for bags, datasets and training runs (not committed).
        results: Folder the tables are written to (``results/<mode>/``).
        workers: Worker processes; 1 runs every job in this process.
        device: ``auto``, ``cpu`` or ``cuda`` for training.
        progress: Progress-bar factory.
        executor: Local worker processes, or Ray tasks (``work`` on storage every node mounts).
        stop_after: Time budget in seconds from now: no dataset build or job starts after it (None: no limit).
    """

    def __init__(
        self,
        experiment: ExperimentConfig,
        *,
        mode: str,
        work: Path,
        results: Path,
        workers: int,
        device: str = "auto",
        progress: ProgressFactory = _silent,
        executor: Executor = LOCAL,
        stop_after: float | None = None,
    ) -> None:
        self.experiment = experiment
        self.mode = mode
        self.work = work.resolve()
        self.results = results / mode
        self.workers = workers
        self.device = device
        self.progress = progress
        self.executor = executor
        self.datasets = self.work / "datasets"
        os.environ["MINARI_DATASETS_PATH"] = str(self.datasets)
        self.deadline = None if stop_after is None else time.time() + stop_after
        #: Names of the training jobs the last table reused from earlier runs, trained, and left for a later run.
        self.reused: list[str] = []
        self.trained: list[str] = []
        self.pending: list[str] = []

    def _map(
        self, description: str, function: Callable[[Any], T], items: Sequence[Any], resources: Resources = ONE_CPU
    ) -> list[T]:
        """``[function(item) for item in items]`` over the worker processes or Ray, with a progress bar."""
        with self.progress(description, len(items)) as advance:
            if self.executor.kind == "local" and (self.workers == 1 or len(items) == 1):
                results = []
                for item in items:
                    results.append(function(item))
                    advance()
                return results
            ordered: list[Any] = [None] * len(items)
            for index, result in run_unordered(
                function,
                items,
                executor=self.executor,
                workers=self.workers,
                setup=_init_worker,
                setup_args=(str(self.datasets),),
                resources=resources,
                name=f"symgate-experiment-{function.__name__.strip('_')}",
            ):
                ordered[index] = result
                advance()
            return ordered

    def _behaviour(self) -> BehaviourConfig:
        """The datasets' expert (``experiment.behaviour``); the DQN is trained here once and then cached."""
        env = DatasetSpec("expert", True, 0, 1, ONE_CONTEXT, self.experiment.test_contexts, self.experiment.env).env()
        return behaviour_config(self.experiment, env, self.work)

    def _build_datasets(self, table: str, specs: Sequence[DatasetSpec]) -> None:
        """Build every dataset not already built from the same configs.

        Raises:
            TimeBudgetError: The time budget ran out before every dataset was there.
        """
        unique = {spec.dataset_id: spec for spec in specs}.values()
        todo = [spec for spec in unique if not dataset_is_built(spec, self.work)]
        if todo:
            built = self._map(
                "datasets: fleet → bag → Minari", _build, [(spec, self.work, self.deadline) for spec in todo]
            )
            missing = sum(dataset_id is None for dataset_id in built)
            if missing:
                raise TimeBudgetError(table, f"{missing} dataset build(s)")

    def _train(self, table: str, description: str, jobs: Sequence[TrainingJob]) -> list[dict[str, Any]]:
        """Every job's result in job order, reusing saved ones and training the rest.

        Raises:
            TimeBudgetError: The time budget left some jobs (or their datasets) for a later run.
        """
        results = {job.name: cached_result(job) for job in jobs}
        self.reused = [name for name, result in results.items() if result is not None]
        todo = [job for job in jobs if results[job.name] is None]
        self.trained, self.pending = [], [job.name for job in todo]
        if todo:
            self._build_datasets(table, [spec for job in todo for spec in job.datasets])
            # A training job on CUDA asks Ray for a GPU (Ray then sets CUDA_VISIBLE_DEVICES), else for a CPU.
            gpu = Resources(num_cpus=1, num_gpus=1) if self.device == "cuda" else ONE_CPU
            items = [(job, self.deadline) for job in todo]
            for job, result in zip(todo, self._map(description, _train_job, items, gpu), strict=True):
                results[job.name] = result
            self.trained = [job.name for job in todo if results[job.name] is not None]
            self.pending = [job.name for job in todo if results[job.name] is None]
            if self.pending:
                raise TimeBudgetError(table, f"{len(self.pending)} training job(s)")
        return [result for result in results.values() if result is not None]

    def run(self, table: TableName) -> Path:
        """Run one table and write it; returns the Markdown path.

        Raises:
            TimeBudgetError: The time budget ran out before the table's last job (finished jobs are saved).
        """
        started = time.perf_counter()
        if table == "1":
            results, protocol = self._distillation()
        else:
            jobs = plan_training(table, self.experiment, self.work, self.device, behaviour=self._behaviour())
            results = self._train(table, f"table {table}: train + evaluate", jobs)
            protocol = {
                "experiment": self.experiment.model_dump(mode="json"),
                "jobs": {job.name: job.config.model_dump(mode="json") for job in jobs},
                "datasets": sorted({spec.dataset_id for job in jobs for spec in job.datasets}),
                "reused_jobs": self.reused,
                "jobs_wall_s": sum(result["wall_s"] for result in results),
            }
        device = ", ".join(sorted({str(r.get("device", self.device)) for r in results})) or self.device
        report = build_report(table, self.mode, results, protocol, device, time.perf_counter() - started)
        return write_report(report, self.results)

    def tune(self, table: OfflineTable, presets: Path = PRESETS, write: bool = True) -> Path:
        """λ tuning (:mod:`~pipeline.experiment.tuning`) of one table; returns the JSON record's path.

        Raises:
            TimeBudgetError: The time budget ran out before the last candidate (finished ones are saved).
        """
        jobs = plan_tuning(table, self.experiment, self.work, self.device, presets, self._behaviour())
        results = self._train(table, f"table {table}: tune λ on validation contexts", jobs)
        return finish_tuning(
            table, self.mode, jobs, results, self.experiment, self.results, presets=presets, write=write
        )

    def _distillation(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        import torch

        from pipeline.train.trainer import resolve_device

        specs = dataset_specs(self.experiment, self._behaviour())
        self._build_datasets("1", specs)
        if self.deadline is not None and time.time() > self.deadline:
            raise TimeBudgetError("1", "the distillation")
        data = load_distillation_data(
            specs,
            self.experiment.gamma,
            lambda items: self._map("table 1: expert action values", _action_values, items),
        )
        device = resolve_device(self.device)
        cells = 1 + len(self.experiment.distillation.etas) * len(TARGET_KINDS)  # the regression, then each cell
        with self.progress("table 1: distil, then roll out each target", cells) as advance:
            results = run_distillation(data, self.experiment, device, advance)
        for result in results:
            result["device"] = str(device)
        protocol = {
            "experiment": self.experiment.model_dump(mode="json"),
            "datasets": [spec.dataset_id for spec in specs],
            "states": len(data.observations),
            "torch_threads": torch.get_num_threads(),
        }
        return results, protocol


def _build(item: tuple[DatasetSpec, Path, float | None]) -> str | None:
    spec, work, deadline = item
    if deadline is not None and time.time() > deadline:
        return None  # out of time: left for the next run
    return build_dataset(spec, work)


def _train_job(item: tuple[TrainingJob, float | None]) -> dict[str, Any] | None:
    job, deadline = item
    if deadline is not None and time.time() > deadline:
        return None  # out of time: left for the next run
    return run_training(job)


def _action_values(item: tuple[Any, Sequence[str], dict[str, Any], float, BehaviourConfig]) -> Any:
    return expert_action_values(*item)
