"""Training speed: symgate IQL/CQL updates/s vs d3rlpy 2.8.1 on the same data, and vectorised seeds.

1. Updates/s of one symgate agent (continuous actions, MLP 2×256, batch 256, no symmetry
   augmentation: the plain algorithms) against d3rlpy's IQL and CQL with the same sizes and
   hyperparameters, on the same dataset, the same CPU, in one run. d3rlpy 2.8.1 pins
   gymnasium 1.0.0 (symgate needs 1.4.0), so it lives in its own venv ``.venv-bench`` (created
   here when missing) and runs in a subprocess, ``bench/d3rlpy_runner.py``, that stays alive so
   that repeats alternate between the two. Timed: the update calls only, on minibatches drawn
   beforehand (symgate: ``OfflineData.sample``; d3rlpy: ``sample_transition_batch``), after a
   warm-up; sampling is timed separately and reported in a second row per algorithm.
2. N seeds trained as one vectorised symgate IQL model against N single-seed runs one after
   the other (member i of the vectorised run is the single-seed run with seed i), and against
   d3rlpy run N times (the paper's N-seed protocol): one d3rlpy run of the same number of updates
   is timed and counted N times (the runs are alike, so the time is linear in N). Timed: the
   update loop (sampling included, as in ``train``) of each run; building the agents is not.

The sizes (updates per repeat, repeats, updates per seed run) default to the constants below;
``--updates``, ``--repeats``, ``--warmup`` and ``--seed-updates`` shrink them on a loaded machine, and the rows
say what was run. Thread counts follow torch's defaults in both processes (``OMP_NUM_THREADS``
sets both).

The dataset is a small simulated fleet ingested by the real pipeline into a temporary
``MINARI_DATASETS_PATH``; d3rlpy gets the same episodes as an ``.npz`` (no pickle).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import numpy as np
import torch
from common import alternate, median, write_result

from pipeline.fleet import FleetConfig, record_fleet
from pipeline.ingest import IngestConfig, ingest
from pipeline.train.buffer import Batch, OfflineData, load_offline_data
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import Agent, build_agent, member_generators

REPEATS = 3
UPDATES = 300  # timed updates per repeat, symgate and d3rlpy alike
WARMUP = 30  # untimed updates before the first repeat
SEEDS = 20
SEED_UPDATES = 40  # updates per run in the vectorised-vs-sequential comparison
BATCH_SIZE = 256
HIDDEN = (256, 256)
DEVICE = torch.device("cpu")
FLEET = {"robots": 2, "episodes": 20, "recipe": "mixed"}
DATASET_ID = "symgate/bench-train-v0"

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / ".venv-bench"
RUNNER = Path(__file__).resolve().with_name("d3rlpy_runner.py")
# Exact torch pin: anything looser pulls a multi-GB CUDA build.
BENCH_REQUIREMENTS = ("torch==2.13.0", "d3rlpy==2.8.1")
D3RLPY_VERSION = "2.8.1"


@dataclass(frozen=True)
class Sizes:
    """How much is timed: ``updates`` per repeat, ``repeats``, ``warmup`` and ``seed_updates`` per seed run."""

    updates: int = UPDATES
    repeats: int = REPEATS
    warmup: int = WARMUP
    seed_updates: int = SEED_UPDATES


def train_config(algorithm: str, seeds: int = 1, seed: int = 0) -> TrainConfig:
    """The benchmarked configuration: plain IQL/CQL (no augmentation), 2×256, batch 256, CPU."""
    return TrainConfig.model_validate(
        {
            "algorithm": algorithm,
            "seeds": seeds,
            "seed": seed,
            "batch_size": BATCH_SIZE,
            "hidden": list(HIDDEN),
            "augmentation": {"strategy": "none", "spec": str(ROOT / "deploy" / "symmetry" / "reacher.yaml")},
            "device": DEVICE.type,
        }
    )


def synchronize() -> None:
    """Wait for queued device work (a no-op on the CPU, where torch ops run eagerly)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@dataclass
class SymgateAgent:
    """One symgate agent, trained on as the benchmark asks (the pieces ``train`` uses)."""

    config: TrainConfig
    data: OfflineData
    generators: list[torch.Generator] = field(init=False)
    agent: Agent = field(init=False)
    step: int = 0

    def __post_init__(self) -> None:
        self.generators = member_generators(self.config)
        self.agent = build_agent(self.config, self.data, self.generators, DEVICE)

    def sample(self, updates: int) -> list[Batch]:
        """``updates`` minibatches from the members' generators."""
        return [self.data.sample(self.generators, self.config.batch_size) for _ in range(updates)]

    def update(self, batches: list[Batch]) -> None:
        """One ``algorithm.update`` per minibatch (the augmenter is off: no group elements)."""
        for batch in batches:
            self.step += 1
            self.agent.algorithm.update(batch, None, self.step)

    def timed(self, updates: int) -> tuple[float, float]:
        """``(update seconds, sampling seconds)`` of ``updates`` updates on batches drawn beforehand."""
        start = time.perf_counter()
        batches = self.sample(updates)
        synchronize()
        sample_s = time.perf_counter() - start
        start = time.perf_counter()
        self.update(batches)
        synchronize()
        return time.perf_counter() - start, sample_s

    def training_loop_seconds(self, updates: int) -> float:
        """Seconds of ``updates`` steps of sample-then-update, as ``train``'s loop does them."""
        start = time.perf_counter()
        for _ in range(updates):
            self.update(self.sample(1))
        synchronize()
        return time.perf_counter() - start


class D3rlpyRunner:
    """A d3rlpy runner script in ``.venv-bench`` (default ``bench/d3rlpy_runner.py``), kept alive, asked line by line.

    Its first line (``info``) is read at start, as soon as the runner is ready.
    """

    def __init__(self, python: Path, npz: Path, log: Path, runner: Path = RUNNER) -> None:
        self.log = log
        self._log_handle = log.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            [str(python), str(runner), str(npz)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_handle,
            text=True,
        )
        try:
            self.info = self._read()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout

    def _read(self) -> dict[str, Any]:
        line = self._pipes()[1].readline()
        if not line:
            self.process.wait(timeout=30)
            tail = "".join(self.log.read_text(encoding="utf-8").splitlines(keepends=True)[-20:])
            raise RuntimeError(f"d3rlpy runner exited ({self.process.returncode}); its stderr ends with:\n{tail}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request line and read the runner's reply."""
        stdin, _ = self._pipes()
        stdin.write(json.dumps(message) + "\n")
        stdin.flush()
        return self._read()

    def request(self, algorithm: str, updates: int) -> dict[str, Any]:
        """Time ``updates`` d3rlpy updates of ``algorithm`` (built on the first request)."""
        return self.send({"algo": algorithm, "updates": updates})

    def close(self) -> None:
        """Ask the runner to quit; end it if it does not."""
        if self.process.poll() is None:
            try:
                stdin, _ = self._pipes()
                stdin.write(json.dumps({"command": "quit"}) + "\n")
                stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._log_handle.close()


def ensure_bench_venv() -> Path:
    """``.venv-bench``'s python with d3rlpy 2.8.1, creating or repairing the venv if needed (idempotent)."""
    python = BENCH_VENV / "bin" / "python"
    check = [str(python), "-c", f"import sys, d3rlpy; sys.exit(d3rlpy.__version__ != {D3RLPY_VERSION!r})"]

    def usable() -> bool:
        return python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0

    if usable():
        return python
    how = (
        f"create it by hand: python3 -m venv {BENCH_VENV} && "
        f"{BENCH_VENV}/bin/pip install {' '.join(BENCH_REQUIREMENTS)}"
    )
    print(f"creating {BENCH_VENV} for d3rlpy {D3RLPY_VERSION} (it pins gymnasium 1.0.0; symgate needs 1.4.0)")
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *BENCH_REQUIREMENTS], check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"bench_train: could not create {BENCH_VENV} ({error}); {how}") from error
    if not usable():
        raise SystemExit(f"bench_train: {BENCH_VENV} still cannot import d3rlpy {D3RLPY_VERSION}; {how}")
    return python


def make_dataset(work: Path) -> None:
    """Record a small fleet and ingest it into ``work/datasets`` as ``DATASET_ID``."""
    os.environ["MINARI_DATASETS_PATH"] = str(work / "datasets")
    record_fleet(FleetConfig.model_validate(FLEET), work / "fleet", workers=1)
    ingest([work / "fleet"], IngestConfig(), DATASET_ID, workers=1)


def export_npz(data: OfflineData, config: TrainConfig, path: Path) -> int:
    """Write the dataset's episodes in d3rlpy's ``MDPDataset`` layout plus the settings; returns the steps.

    One row per step (the final observation of each episode is dropped: the layout has no room for
    it, so d3rlpy skips the last transition of episodes that end without termination). The last
    step of every episode is flagged ``terminals`` (terminated) or ``timeouts`` (anything else).
    """
    import minari  # heavy

    observations, actions, rewards, terminals, timeouts = [], [], [], [], []
    for episode in minari.load_dataset(DATASET_ID).iterate_episodes():
        steps = len(episode.rewards)
        observations.append(np.asarray(episode.observations[:-1], dtype=np.float32))
        actions.append(np.asarray(episode.actions, dtype=np.float32))
        rewards.append(np.asarray(episode.rewards, dtype=np.float32))
        end = np.zeros(steps, dtype=np.float32)
        end[-1] = 1.0
        terminated = bool(episode.terminations[-1])
        terminals.append(end if terminated else np.zeros(steps, dtype=np.float32))
        timeouts.append(np.zeros(steps, dtype=np.float32) if terminated else end)
    np.savez(
        path,
        observations=np.concatenate(observations),
        actions=np.concatenate(actions),
        rewards=np.concatenate(rewards),
        terminals=np.concatenate(terminals),
        timeouts=np.concatenate(timeouts),
        action_low=data.action_low.cpu().numpy(),
        action_high=data.action_high.cpu().numpy(),
        gamma=np.float64(config.gamma),
        batch_size=np.int64(config.batch_size),
        hidden=np.asarray(config.hidden, dtype=np.int64),
        expectile=np.float64(config.iql.expectile),
        temperature=np.float64(config.iql.temperature),
        max_weight=np.float64(config.iql.max_weight),
        polyak=np.float64(config.target_polyak),
        actor_lr=np.float64(config.actor_lr),
        critic_lr=np.float64(config.critic_lr),
        cql_alpha=np.float64(config.cql.alpha),
        cql_samples=np.int64(config.cql.sampled_actions),
        cql_entropy=np.float64(config.cql.entropy),
    )
    return int(sum(len(r) for r in rewards))


def versus_d3rlpy(
    data: OfflineData, runner: D3rlpyRunner, sizes: Sizes
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Updates/s of symgate and d3rlpy, IQL and CQL, alternating repeats; rows and raw samples."""
    agents = {name: SymgateAgent(train_config(name), data) for name in ("iql", "cql")}
    updates = sizes.updates
    for name, agent in agents.items():  # warm-up: allocator, thread pool, first-call paths
        agent.timed(sizes.warmup)
        runner.request(name, sizes.warmup)
    sampling: dict[str, list[float]] = {}

    def symgate(name: str) -> Callable[[], float]:
        def run() -> float:
            update_s, sample_s = agents[name].timed(updates)
            sampling.setdefault(f"symgate_{name}_sample_s", []).append(sample_s)
            return updates / update_s

        return run

    def d3rlpy(name: str) -> Callable[[], float]:
        def run() -> float:
            reply = runner.request(name, updates)
            sampling.setdefault(f"d3rlpy_{name}_sample_s", []).append(float(reply["sample_s"]))
            return float(reply["updates_per_s"])

        return run

    samples = alternate(
        sizes.repeats,
        symgate_iql=symgate("iql"),
        d3rlpy_iql=d3rlpy("iql"),
        symgate_cql=symgate("cql"),
        d3rlpy_cql=d3rlpy("cql"),
    )
    rows: list[dict[str, Any]] = []
    setup = (
        f"continuous actions, MLP {'x'.join(map(str, HIDDEN))}, batch {BATCH_SIZE}, 1 seed, CPU "
        f"({torch.get_num_threads()} torch threads here, {runner.info['threads']} in d3rlpy)"
    )
    for name in ("iql", "cql"):
        ours, theirs = samples[f"symgate_{name}"], samples[f"d3rlpy_{name}"]
        rows.append(
            {
                "metric": f"{name.upper()} updates/s, update only ({setup}), median",
                "symgate": median(ours),
                "reference": median(theirs),
                "reference_name": f"d3rlpy {runner.info['d3rlpy']} {name.upper()}Config, same sizes, algo.update",
                "ratio": median(ours) / median(theirs),
                "target": ">= 1.5",
                "method": (
                    f"{sizes.repeats} alternating repeats of {updates} timed updates after {sizes.warmup} warm-up "
                    "updates; "
                    "minibatches drawn before the timed loop (symgate: OfflineData.sample + "
                    "agent.algorithm.update from build_agent; d3rlpy: sample_transition_batch + algo.update)"
                ),
            }
        )
        # Sampling + update per repeat: the throughput a training loop sees.
        ours_total = [
            updates / (updates / rate + s) for rate, s in zip(ours, sampling[f"symgate_{name}_sample_s"], strict=True)
        ]
        theirs_total = [
            updates / (updates / rate + s) for rate, s in zip(theirs, sampling[f"d3rlpy_{name}_sample_s"], strict=True)
        ]
        samples[f"symgate_{name}_with_sampling"] = ours_total
        samples[f"d3rlpy_{name}_with_sampling"] = theirs_total
        rows.append(
            {
                "metric": f"{name.upper()} updates/s, minibatch sampling + update, median",
                "symgate": median(ours_total),
                "reference": median(theirs_total),
                "reference_name": f"d3rlpy {runner.info['d3rlpy']}: sample_transition_batch + algo.update",
                "ratio": median(ours_total) / median(theirs_total),
                "target": ">= 1.5",
                "method": "per repeat: updates / (update seconds + seconds to draw the same number of minibatches)",
            }
        )
    return rows, samples | sampling


def vectorised_seeds(
    data: OfflineData, runner: D3rlpyRunner, sizes: Sizes
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """N seeds as one vectorised IQL model vs N single-seed IQL runs in sequence and vs d3rlpy run N times."""
    steps = sizes.seed_updates

    def vectorised() -> float:
        return SymgateAgent(train_config("iql", seeds=SEEDS), data).training_loop_seconds(steps)

    def sequential() -> float:
        return sum(SymgateAgent(train_config("iql", seed=i), data).training_loop_seconds(steps) for i in range(SEEDS))

    def d3rlpy_runs() -> float:  # one run's sampling + updates, N times (the runs are alike)
        reply = runner.request("iql", steps)
        return SEEDS * (float(reply["update_s"]) + float(reply["sample_s"]))

    SymgateAgent(train_config("iql", seeds=SEEDS), data).training_loop_seconds(5)  # warm-up of the wide shapes
    samples = alternate(sizes.repeats, vectorised_s=vectorised, sequential_s=sequential, d3rlpy_s=d3rlpy_runs)
    work = SEEDS * steps
    ours, theirs = work / median(samples["vectorised_s"]), work / median(samples["sequential_s"])
    d3rlpy = work / median(samples["d3rlpy_s"])
    rows = [
        {
            "metric": f"IQL member-updates/s, {SEEDS} seeds vectorised vs {SEEDS} sequential single-seed runs, median",
            "symgate": ours,
            "reference": theirs,
            "reference_name": f"{SEEDS} single-seed symgate IQL runs, one after the other",
            "ratio": ours / theirs,
            "target": ">= 1.5",
            "method": (
                f"{sizes.repeats} alternating repeats; each run times {steps} steps of OfflineData.sample + "
                "agent.algorithm.update (agent building not timed); ratio = sequential seconds / vectorised seconds"
            ),
        },
        {
            "metric": (
                f"the paper's {SEEDS}-seed protocol, IQL member-updates/s: {SEEDS} seeds vectorised vs "
                f"d3rlpy run {SEEDS} times, median"
            ),
            "symgate": ours,
            "reference": d3rlpy,
            "reference_name": (
                f"d3rlpy {runner.info['d3rlpy']} IQLConfig, same data and sizes, {SEEDS} runs "
                f"(one run of {steps} updates timed, times {SEEDS})"
            ),
            "ratio": ours / d3rlpy,
            "target": ">= 3",
            "method": (
                f"{sizes.repeats} alternating repeats (with the row above) of {steps} updates per seed, sampling "
                f"included on both sides; d3rlpy: {SEEDS} x (sample_transition_batch + algo.update time of one "
                f"run), extrapolated linearly; ratio = d3rlpy's {SEEDS}-run seconds / the vectorised seconds. "
                f"Wall time of the full protocol scales by the same ratio (updates per seed x the same factor)"
            ),
        },
    ]
    return rows, {f"seeds_{name}": values for name, values in samples.items()}


def main() -> None:
    """Build the data, run both comparisons, write ``bench/results/train-<date>-<host>.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--updates", type=int, default=UPDATES, help="Timed updates per repeat.")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="Alternating repeats.")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="Untimed updates before the first repeat.")
    parser.add_argument("--seed-updates", type=int, default=SEED_UPDATES, help="Updates per run, seed rows.")
    args = parser.parse_args()
    sizes = Sizes(updates=args.updates, repeats=args.repeats, warmup=args.warmup, seed_updates=args.seed_updates)
    started = time.perf_counter()
    python = ensure_bench_venv()
    work = Path(tempfile.mkdtemp(prefix="symgate-bench-train-"))
    try:
        make_dataset(work)
        config = train_config("iql")
        data = load_offline_data(DATASET_ID, DEVICE, config.gamma)
        steps = export_npz(data, config, work / "dataset.npz")
        with D3rlpyRunner(python, work / "dataset.npz", work / "d3rlpy_runner.log") as runner:
            print(
                f"dataset: {data.size} transitions in symgate, {steps} steps / {runner.info['transitions']} "
                f"transitions in d3rlpy; torch threads: {torch.get_num_threads()} here, {runner.info['threads']} there"
            )
            rows, samples = versus_d3rlpy(data, runner, sizes)
            seeds_rows, seeds_samples = vectorised_seeds(data, runner, sizes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_result("train", [*rows, *seeds_rows], samples | seeds_samples)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
