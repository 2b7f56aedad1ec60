"""d3rlpy side of ``bench_train.py``: times d3rlpy 2.8.1's IQL and CQL updates on an exported dataset.

Runs in its own venv (``.venv-bench``: d3rlpy 2.8.1 pins gymnasium 1.0.0, symgate needs 1.4.0) and
imports nothing from symgate. ``bench_train.py`` starts it once and keeps it alive, so that its
repeats can alternate with symgate's without paying d3rlpy's import and dataset build each time.

Protocol (one JSON object per line): the runner first writes ``{"ready": true, ...}`` (versions,
threads, transition count), then answers every request line read from stdin,
``{"algo": "iql" | "cql", "updates": N}``, with ``{"algo", "updates", "update_s", "sample_s",
"updates_per_s"}``. The first request for an algorithm builds it (``build_with_dataset``). Each
request samples N minibatches with ``dataset.sample_transition_batch`` (timed as ``sample_s``),
then times N calls of ``algo.update(batch)`` (``update_s``); ``updates_per_s = N / update_s``.
EOF or ``{"command": "quit"}`` ends it. d3rlpy logs to stdout; the runner moves them to stderr so
that stdout carries the protocol only.

Input: an ``.npz`` (no pickle) with ``observations (T, D)``, ``actions (T, A)``, ``rewards (T,)``,
``terminals (T,)``, ``timeouts (T,)`` (one row per step, episodes back to back, d3rlpy's
``MDPDataset`` layout), ``action_low (A,)``, ``action_high (A,)`` and the scalars ``gamma``,
``batch_size``, ``hidden (L,)``, ``expectile``, ``temperature``, ``max_weight``, ``polyak``,
``actor_lr``, ``critic_lr``, ``cql_alpha``, ``cql_samples``, ``cql_entropy``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

# Imported in main(), once stdout is set aside for the protocol (importing d3rlpy may print), and by name so
# that mypy, run in symgate's venv where d3rlpy is not installed, treats it as Any.
d3rlpy: Any = None


def load_dataset(arrays: dict[str, np.ndarray]) -> Any:
    """d3rlpy's ``MDPDataset`` of the exported steps (continuous actions)."""
    return d3rlpy.dataset.MDPDataset(
        observations=arrays["observations"].astype(np.float32),
        actions=arrays["actions"].astype(np.float32),
        rewards=arrays["rewards"].astype(np.float32),
        terminals=arrays["terminals"].astype(np.float32),
        timeouts=arrays["timeouts"].astype(np.float32),
        action_space=d3rlpy.ActionSpace.CONTINUOUS,
    )


def algorithm_config(name: str, arrays: dict[str, np.ndarray]) -> Any:
    """IQL's or CQL's d3rlpy config with symgate's sizes and hyperparameters.

    Both use ``[hidden]`` MLP encoders for every network, batch ``batch_size`` and the dataset's
    action box scaled to [-1, 1] (``MinMaxActionScaler``). CQL's entropy and conservative weights
    are fixed (learning rates 0), as in symgate's CQL; symgate's η = 0 becomes d3rlpy's default 1.0.
    An optional ``cql_soft_q_backup`` (default false) sets d3rlpy's ``soft_q_backup``: the target
    min Q̄(s′, a′) - η log π(a′|s′) with a′ ~ π(·|s′), symgate's CQL target.
    """
    hidden = [int(h) for h in arrays["hidden"]]
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=hidden)
    common: dict[str, Any] = {
        "batch_size": int(arrays["batch_size"]),
        "gamma": float(arrays["gamma"]),
        "tau": float(arrays["polyak"]),
        "actor_learning_rate": float(arrays["actor_lr"]),
        "critic_learning_rate": float(arrays["critic_lr"]),
        "actor_encoder_factory": encoder,
        "critic_encoder_factory": encoder,
        "action_scaler": d3rlpy.preprocessing.MinMaxActionScaler(
            minimum=arrays["action_low"].astype(np.float32), maximum=arrays["action_high"].astype(np.float32)
        ),
    }
    config: Any
    if name == "iql":
        config = d3rlpy.algos.IQLConfig(
            **common,
            value_encoder_factory=encoder,
            expectile=float(arrays["expectile"]),
            weight_temp=float(arrays["temperature"]),
            max_weight=float(arrays["max_weight"]),
        )
    elif name == "cql":
        entropy = float(arrays["cql_entropy"])
        config = d3rlpy.algos.CQLConfig(
            **common,
            conservative_weight=float(arrays["cql_alpha"]),
            n_action_samples=int(arrays["cql_samples"]),
            # The temperature is a log-parameter, so symgate's η = 0 has no exact counterpart; its value does not
            # change the work done. d3rlpy's default (1.0) then: a near-zero one (e^-20) drives d3rlpy's CPU
            # math into denormal floats after a few hundred updates and halves its speed, an artefact.
            initial_temperature=entropy if entropy > 0 else 1.0,
            temp_learning_rate=0.0,
            initial_alpha=1.0,
            alpha_learning_rate=0.0,
            soft_q_backup=bool(arrays["cql_soft_q_backup"]) if "cql_soft_q_backup" in arrays else False,
        )
    else:
        raise ValueError(f"unknown algorithm {name!r}: expected iql or cql")
    return config


def build_algorithm(name: str, arrays: dict[str, np.ndarray], dataset: Any) -> Any:
    """IQL or CQL (:func:`algorithm_config`) on the CPU, built on ``dataset``."""
    algorithm = algorithm_config(name, arrays).create(device="cpu:0")
    algorithm.build_with_dataset(dataset)
    return algorithm


def time_updates(algorithm: Any, dataset: Any, updates: int) -> dict[str, float]:
    """Sample ``updates`` minibatches, then time ``algorithm.update`` on each of them."""
    batch_size = int(algorithm.config.batch_size)
    start = time.perf_counter()
    batches = [dataset.sample_transition_batch(batch_size) for _ in range(updates)]
    sample_s = time.perf_counter() - start
    start = time.perf_counter()
    for batch in batches:
        algorithm.update(batch)  # returns Python floats: the CPU work is done when it returns
    update_s = time.perf_counter() - start
    return {"update_s": update_s, "sample_s": sample_s, "updates_per_s": updates / update_s}


def serve(arrays: dict[str, np.ndarray], requests: TextIO, replies: TextIO, seed: int) -> None:
    """Answer timing requests until EOF or ``quit`` (see the module docstring)."""
    d3rlpy.seed(seed)
    dataset = load_dataset(arrays)
    ready = {
        "ready": True,
        "d3rlpy": d3rlpy.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "transitions": int(dataset.transition_count),
    }
    replies.write(json.dumps(ready) + "\n")
    replies.flush()
    algorithms: dict[str, Any] = {}
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("command") == "quit":
            break
        name, updates = str(request["algo"]), int(request["updates"])
        if name not in algorithms:
            algorithms[name] = build_algorithm(name, arrays, dataset)
        reply = {"algo": name, "updates": updates, **time_updates(algorithms[name], dataset, updates)}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main() -> None:
    """Parse arguments, keep stdout for the protocol, serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("npz", type=Path, help="Exported dataset and settings (see the module docstring).")
    parser.add_argument("--seed", type=int, default=0, help="d3rlpy.seed(...) value.")
    args = parser.parse_args()
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # d3rlpy's structlog output goes to stderr
    sys.stdout = sys.stderr
    global d3rlpy  # the one lazily imported module
    d3rlpy = importlib.import_module("d3rlpy")
    with np.load(args.npz, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    serve(arrays, sys.stdin, replies, args.seed)


if __name__ == "__main__":
    main()
