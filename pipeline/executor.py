"""Where ingest, gate and experiment run their independent tasks: a local process pool or a Ray cluster.

One abstraction under all three stages. A stage hands :func:`run_unordered` a module-level
``function`` and its items; results come back as ``(index, result)`` pairs as tasks finish, and the
stage puts them in item order, so the output is the same whatever ran the tasks, or in which order.

- ``local`` (the default): a ``ProcessPoolExecutor`` of ``workers`` processes on this machine;
  ``setup(*setup_args)`` initialises each process once.
- ``ray``: one Ray task per item on the cluster at ``address`` (``ray start --head`` prints it), or on
  a private single-node cluster started for this process when there is no address. Ray
  reuses a worker process for many tasks of one driver, so ``setup`` runs once per worker process
  too (the first task with these ``setup_args`` runs it). A task whose worker process dies
  (SIGKILL, out of memory, a lost node) is re-run, up to ``retries`` times; tasks are pure functions
  of their item, so a re-run gives the same result. When the retries run out the run fails with
  :class:`ExecutorError` and the stage writes nothing. A task that raises is not retried: its
  exception (an ``IngestError`` naming the bag, say) is raised here as it is.

Ray moves the arguments and results (numpy arrays of episodes, gate records); the data itself is
read where it lies, by path: on a multi-node cluster, bags, model folders and
``MINARI_DATASETS_PATH`` must be on storage that every node mounts at the same path.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from pipeline.io import UserInputError

ExecutorName = Literal["local", "ray"]
#: How a stage's ``--executor ray`` tells users to get Ray.
RAY_INSTALL = "pip install 'symgate[ray]' (ray==2.60.0)"
T = TypeVar("T")
R = TypeVar("R")


class ExecutorError(RuntimeError):
    """A task could not be completed by the executor (its worker died more often than it may be retried)."""


class RayNotInstalledError(UserInputError):
    """``--executor ray`` without Ray installed."""


@dataclass(frozen=True)
class Executor:
    """Where a stage's tasks run.

    Attributes:
        kind: ``local`` (process pools on this machine) or ``ray``.
        address: The Ray cluster to join (``HOST:PORT`` of ``ray start --head``, or ``auto``); ``None``
            starts a private local cluster for this process. Only with ``ray``.
        retries: How often Ray re-runs a task whose worker process died. Only with ``ray``.
    """

    kind: ExecutorName = "local"
    address: str | None = None
    retries: int = 3

    def __post_init__(self) -> None:
        if self.address is not None and self.kind != "ray":
            raise UserInputError("--ray-address needs --executor ray")

    def describe(self) -> str:
        """``local`` or ``ray`` with its address, for reports and logs."""
        return self.kind if self.kind == "local" else f"ray ({self.address or 'private local cluster'})"


LOCAL = Executor()


def executor_from_options(kind: str, address: str | None) -> Executor:
    """The executor of ``--executor KIND --ray-address ADDRESS``; with ``ray``, checks that Ray is installed."""
    if kind not in ("local", "ray"):
        raise UserInputError(f"--executor {kind}: expected local or ray")
    executor = Executor(cast(ExecutorName, kind), address)
    if executor.kind == "ray":
        import_ray()
    return executor


@dataclass(frozen=True)
class Resources:
    """What one task asks the Ray scheduler for (the local pool runs one task per process)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


ONE_CPU = Resources()


def run_unordered(
    function: Callable[[T], R],
    items: Sequence[T],
    *,
    executor: Executor,
    workers: int,
    setup: Callable[..., None] | None = None,
    setup_args: tuple[Hashable, ...] = (),
    start_method: str = "forkserver",
    preload: tuple[str, ...] = (),
    resources: Resources = ONE_CPU,
    name: str = "symgate",
) -> Iterator[tuple[int, R]]:
    """Run ``function(item)`` for every item; yield ``(index, result)`` as each task finishes.

    Args:
        function: A module-level function (workers import it by name).
        items: Its arguments, one task each.
        executor: Local process pool or Ray.
        workers: Processes of the local pool (Ray's concurrency is the cluster's CPUs and ``resources``).
        setup: Run once in each worker process before its first task, with ``setup_args``.
        setup_args: Hashable, so a Ray worker knows whether it has run this setup already.
        start_method: The local pool's multiprocessing start method.
        preload: Modules the local forkserver imports once, before it forks workers.
        resources: What each Ray task asks for.
        name: Ray task names are ``{name}:{index}`` (shown by ``ray list tasks`` and in process titles).

    Raises:
        RayNotInstalledError: ``ray`` without Ray installed.
        ExecutorError: A Ray task's worker died more than ``executor.retries`` times.
    """
    if executor.kind == "ray":
        yield from _run_on_ray(function, items, executor, setup, setup_args, resources, name)
        return
    import multiprocessing

    context = multiprocessing.get_context(start_method)
    if preload:
        context.set_forkserver_preload(list(preload))
    with ProcessPoolExecutor(
        max(1, min(workers, len(items))), mp_context=context, initializer=setup, initargs=cast(Any, setup_args)
    ) as pool:
        futures: dict[Future[R], int] = {pool.submit(function, item): index for index, item in enumerate(items)}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=futures.__getitem__):
                yield futures[future], future.result()


def run_ordered(function: Callable[[T], R], items: Sequence[T], **options: Any) -> list[R]:
    """:func:`run_unordered`, collected in item order (``options`` as there)."""
    results: list[Any] = [None] * len(items)
    for index, result in run_unordered(function, items, **options):
        results[index] = result
    return results


def import_ray() -> Any:
    """Import Ray, or say how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError as error:
        raise RayNotInstalledError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}") from error


def connect(executor: Executor) -> Any:
    """Join ``executor``'s Ray cluster once per process (a later call reuses the connection); returns ``ray``."""
    ray = import_ray()
    if not ray.is_initialized():
        if executor.address is None:  # a private cluster, stopped at exit; no dashboard, token auth on (Ray's default)
            ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=executor.address, log_to_driver=False, configure_logging=False)
    return ray


_done_setup: tuple[Hashable, ...] | None = None


def _call(
    setup: Callable[..., None] | None, setup_args: tuple[Hashable, ...], function: Callable[[T], R], item: T
) -> R:
    """One Ray task: this worker process's setup (once), then the function."""
    global _done_setup  # per worker process, like the local pool's initializer
    key = (None if setup is None else f"{setup.__module__}.{setup.__qualname__}", *setup_args)
    if setup is not None and _done_setup != key:
        setup(*setup_args)
        _done_setup = key
    return function(item)


def _run_on_ray(
    function: Callable[[T], R],
    items: Sequence[T],
    executor: Executor,
    setup: Callable[..., None] | None,
    setup_args: tuple[Hashable, ...],
    resources: Resources,
    name: str,
) -> Iterator[tuple[int, R]]:
    ray = connect(executor)
    from ray.exceptions import RayTaskError, WorkerCrashedError

    remote = ray.remote(
        num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_retries=executor.retries, retry_exceptions=False
    )(_call)
    refs = {
        remote.options(name=f"{name}:{index}").remote(setup, setup_args, function, item): index
        for index, item in enumerate(items)
    }
    pending = list(refs)
    try:
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            for ref in finished:
                try:
                    result = ray.get(ref)
                except RayTaskError as error:
                    cause = error.cause
                    raise (cause if isinstance(cause, Exception) else error) from None
                except WorkerCrashedError as error:
                    raise ExecutorError(
                        f"Ray task {name}:{refs[ref]}: its worker process died {executor.retries + 1} times "
                        f"(retries exhausted: {error}); the run is abandoned and nothing was written"
                    ) from None
                yield refs[ref], result
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if pending:  # a cancelled task has stopped (writing files, say) once its result resolves
            ray.wait(pending, num_returns=len(pending), timeout=60)
