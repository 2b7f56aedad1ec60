"""``symgate experiment paper``: build the datasets, run a table's jobs over worker processes, write it.

Jobs are independent (one (recipe, strategy) cell with all its seeds vectorised, or one seed's
action values for Table 1), so they run in parallel worker processes or Ray tasks, each with one
torch thread; their results come back as plain numbers and are aggregated in this process, in job
order, so the tables do not depend on what ran the jobs. On Ray, a training job asks for one GPU
when ``--device cuda`` is given and for one CPU otherwise.
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
from pipeline.experiment.config import ExperimentConfig, TableName
from pipeline.experiment.data import ONE_CONTEXT, DatasetSpec, build_dataset
from pipeline.experiment.distillation import (
    TARGET_KINDS,
    dataset_specs,
    expert_action_values,
    load_distillation_data,
    run_distillation,
)
from pipeline.experiment.offline_rl import plan_training, run_training
from pipeline.experiment.report import build_report, write_report
from sim.behaviour import BehaviourConfig

#: ``progress(description, total)`` → a context manager yielding ``advance()``.
ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[..., None]]]
T = TypeVar("T")


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
        self._built: set[str] = set()

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
        env = DatasetSpec("expert", True, 0, 1, ONE_CONTEXT, self.experiment.test_contexts).env()
        return behaviour_config(self.experiment, env, self.work)

    def _build_datasets(self, specs: Sequence[DatasetSpec]) -> None:
        todo = list({spec.dataset_id: spec for spec in specs if spec.dataset_id not in self._built}.values())
        if todo:
            self._map("datasets: fleet → bag → Minari", _build, [(spec, self.work) for spec in todo])
            self._built.update(spec.dataset_id for spec in todo)

    def run(self, table: TableName) -> Path:
        """Run one table and write it; returns the Markdown path."""
        started = time.perf_counter()
        if table == "1":
            results, protocol = self._distillation()
        else:
            jobs = plan_training(table, self.experiment, self.work, self.device, self._behaviour())
            self._build_datasets([spec for job in jobs for spec in job.datasets])
            # A training job on CUDA asks Ray for a GPU (Ray then sets CUDA_VISIBLE_DEVICES), else for a CPU.
            gpu = Resources(num_cpus=1, num_gpus=1) if self.device == "cuda" else ONE_CPU
            results = self._map(f"table {table}: train + evaluate", run_training, jobs, gpu)
            protocol = {
                "experiment": self.experiment.model_dump(mode="json"),
                "jobs": {job.name: job.config.model_dump(mode="json") for job in jobs},
                "datasets": sorted({spec.dataset_id for job in jobs for spec in job.datasets}),
            }
        device = results[0].get("device", self.device) if results else self.device
        report = build_report(table, self.mode, results, protocol, device, time.perf_counter() - started)
        return write_report(report, self.results)

    def _distillation(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        import torch

        from pipeline.train.trainer import resolve_device

        specs = dataset_specs(self.experiment, self._behaviour())
        self._build_datasets(specs)
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


def _build(item: tuple[DatasetSpec, Path]) -> str:
    return build_dataset(*item)


def _action_values(item: tuple[Any, Sequence[str], dict[str, Any], float, BehaviourConfig]) -> Any:
    return expert_action_values(*item)
