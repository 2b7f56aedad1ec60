"""Run the gate's episodes: tasks of lock-step episodes, in this process, in worker processes or on Ray.

Each task is up to ``episodes_per_task`` episodes of one suite, advanced together so that one ONNX
Runtime call per control step serves all of them. Every episode's reset seed is derived from
(gate seed, suite, context, episode), so results do not depend on the number of workers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict

from pipeline.executor import LOCAL, Executor, run_unordered
from pipeline.export.contract import Contract
from pipeline.gate.config import GateConfig
from pipeline.gate.policy import OnnxPolicy, open_session
from sim.rollout import run_lockstep


class EpisodeRecord(BaseModel):
    """One gate episode."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    context_index: int
    context_rad: float
    episode: int
    seed: int
    success: bool
    steps: int
    non_finite_action: bool


@dataclass(frozen=True)
class Task:
    """Episodes of one suite that a worker runs together."""

    suite: str
    env_id: str
    env_config: str  # gym.make keyword arguments as JSON (the suite's randomisation applied)
    context_indices: tuple[int, ...]
    contexts: tuple[float, ...]
    episodes: tuple[int, ...]
    seeds: tuple[int, ...]


def episode_seed(gate_seed: int, suite_index: int, context_index: int, episode: int) -> int:
    """The reset seed of one episode, independent of how episodes are split among workers."""
    return int(np.random.SeedSequence([gate_seed, suite_index, context_index, episode]).generate_state(1)[0])


def plan_tasks(config: GateConfig, env_id: str) -> list[Task]:
    """Split every suite's (context, episode) pairs into tasks of at most ``episodes_per_task``."""
    tasks: list[Task] = []
    for suite_index, suite in enumerate(config.suites):
        env_kwargs = json.dumps(config.env_kwargs(suite.randomization), sort_keys=True)
        angles = config.contexts.angles(suite.contexts)
        jobs = [(c, e) for c in range(len(angles)) for e in range(suite.episodes_per_context)]
        for start in range(0, len(jobs), config.episodes_per_task):
            chunk = jobs[start : start + config.episodes_per_task]
            tasks.append(
                Task(
                    suite=suite.name,
                    env_id=env_id,
                    env_config=env_kwargs,
                    context_indices=tuple(c for c, _ in chunk),
                    contexts=tuple(float(angles[c]) for c, _ in chunk),
                    episodes=tuple(e for _, e in chunk),
                    seeds=tuple(episode_seed(config.seed, suite_index, c, e) for c, e in chunk),
                )
            )
    return tasks


class _Worker:
    """A policy session plus a pool of envs per env config, reused across tasks."""

    def __init__(self, model_dir: Path, contract: Contract) -> None:
        self.model_dir, self.contract = model_dir, contract
        self.policy: OnnxPolicy | None = None
        self.envs: dict[str, list[gym.Env[Any, Any]]] = {}

    def run(self, task: Task) -> list[EpisodeRecord]:
        pool = self.envs.setdefault(task.env_config, [])
        kwargs = json.loads(task.env_config)
        while len(pool) < len(task.seeds):
            pool.append(gym.make(task.env_id, **kwargs))
        envs = pool[: len(task.seeds)]
        if self.policy is None:
            names = envs[0].unwrapped.observation_names  # type: ignore[attr-defined]
            self.policy = OnnxPolicy(open_session(self.model_dir), self.contract, names)
        batch = run_lockstep(envs, self.policy, task.seeds, task.contexts)
        return [
            EpisodeRecord(
                suite=task.suite,
                context_index=task.context_indices[i],
                context_rad=task.contexts[i],
                episode=task.episodes[i],
                seed=task.seeds[i],
                success=bool(batch.success[i]),
                steps=int(batch.steps[i]),
                non_finite_action=bool(batch.non_finite_action[i]),
            )
            for i in range(len(task.seeds))
        ]

    def close(self) -> None:
        for pool in self.envs.values():
            for env in pool:
                env.close()


_worker: _Worker | None = None


def _init_worker(model_dir: str, contract_json: str) -> None:
    global _worker  # one per worker process, like a CUDA context
    _worker = _Worker(Path(model_dir), Contract.model_validate_json(contract_json))


def _run_in_worker(task: Task) -> list[EpisodeRecord]:
    assert _worker is not None, "worker not initialised"
    return _worker.run(task)


def run_tasks(
    model_dir: Path,
    contract: Contract,
    tasks: list[Task],
    workers: int,
    on_episodes: Callable[[int], None] | None = None,
    executor: Executor = LOCAL,
) -> list[EpisodeRecord]:
    """Run every task; episodes come back in task order whatever the worker count or executor.

    Args:
        model_dir: The model folder (``policy.onnx``); with Ray, at the same path on every node.
        contract: Its verified contract.
        tasks: From :func:`plan_tasks`.
        workers: Local processes; 1 runs in this process.
        on_episodes: Called with the number of episodes of each finished task (progress).
        executor: Local processes, or one Ray task per task on a cluster.
    """
    results: list[list[EpisodeRecord]] = []
    for records in _results(model_dir, contract, tasks, workers, executor):
        results.append(records)
        if on_episodes is not None:
            on_episodes(len(records))
    suite_order = {suite: i for i, suite in enumerate(dict.fromkeys(task.suite for task in tasks))}
    return sorted(
        (record for records in results for record in records),
        key=lambda r: (suite_order[r.suite], r.context_index, r.episode),
    )


def _results(
    model_dir: Path, contract: Contract, tasks: list[Task], workers: int, executor: Executor
) -> Iterator[list[EpisodeRecord]]:
    if workers == 1 and executor.kind == "local":
        worker = _Worker(model_dir, contract)
        try:
            yield from (worker.run(task) for task in tasks)
        finally:
            worker.close()
        return
    # Local workers fork from a clean server that has imported this module once: no fork after ONNX
    # Runtime, PyBullet or torch threads exist in the caller, and no per-worker re-import as with spawn.
    for _, records in run_unordered(
        _run_in_worker,
        tasks,
        executor=executor,
        workers=workers,
        setup=_init_worker,
        setup_args=(str(model_dir.resolve()), contract.model_dump_json()),
        preload=("pipeline.gate.runner",),
        name="symgate-gate",
    ):
        yield records
