"""d3rlpy side of ``bench_correctness.py``: trains d3rlpy 2.8.1 seeds of one algorithm, then answers queries.

Runs in ``.venv-bench`` (see ``bench_train.py``) and imports nothing from symgate. It reads an
``.npz`` (no pickle) of transitions, already encoded into symgate's network inputs (the
normalised forward-kinematics features), so that both sides learn from identical inputs:
``observations (N, F)``, ``actions`` (``(N,)`` indices, or ``(N, A)`` torques), ``rewards (N,)``,
``next_observations (N, F)``, ``terminals (N,)``, the scalars ``algo``, ``seeds``, ``updates``,
``gamma``, ``batch_size``, ``hidden (L,)``, and the algorithm's settings:

- ``algo = "discrete_cql"``: ``DiscreteCQL`` with ``n_actions``, ``learning_rate``, ``alpha``,
  ``target_update_interval``, ``n_critics``;
- ``algo = "iql" | "cql"``: ``IQL`` / ``CQL`` built by ``bench/d3rlpy_runner.py``'s
  ``algorithm_config`` (its keys: ``action_low``, ``action_high``, ``polyak``, ...).

It trains seed ``s`` = 0..seeds-1 with ``d3rlpy.seed(s)`` on ``updates`` minibatches drawn
uniformly with replacement from the same transitions (``numpy`` generator seeded ``s``), fed to
``algo.update`` as ``TransitionMiniBatch`` es. Then it writes ``{"ready": true, ...}`` (versions,
seconds per seed) and answers each request line, seed ``s`` on ``features[s]``:

- ``{"features": (S, B, F)}``, discrete: ``{"q": (S, n_critics, B, n)}``, every critic's Q of every action;
- ``{"features": (S, B, F)}``, continuous: ``{"action": (S, B, A)}``, the deterministic policy's torques;
- ``{"features": (S, B, F), "actions": (S, B, A)}``, continuous: ``{"q": (S, n_critics, B)}``.

EOF or ``{"command": "quit"}`` ends it. d3rlpy's logs go to stderr.
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

import d3rlpy_runner
import numpy as np
import torch

d3rlpy: Any = None  # imported in main(), once stdout is set aside for the protocol


def create(arrays: dict[str, np.ndarray]) -> Any:
    """The algorithm of ``arrays["algo"]``, built for the encoded inputs on the CPU, untrained."""
    name = str(arrays["algo"])
    observations = arrays["observations"]
    if name != "discrete_cql":
        algo = d3rlpy_runner.algorithm_config(name, arrays).create(device="cpu:0")
        algo.create_impl((observations.shape[1],), int(arrays["actions"].shape[1]))
        return algo
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=[int(h) for h in arrays["hidden"]])
    config = d3rlpy.algos.DiscreteCQLConfig(
        learning_rate=float(arrays["learning_rate"]),
        batch_size=int(arrays["batch_size"]),
        gamma=float(arrays["gamma"]),
        n_critics=int(arrays["n_critics"]),
        target_update_interval=int(arrays["target_update_interval"]),
        alpha=float(arrays["alpha"]),
        encoder_factory=encoder,
    )
    algo = config.create(device="cpu:0")
    algo.create_impl((observations.shape[1],), int(arrays["n_actions"]))
    return algo


def train_seed(arrays: dict[str, np.ndarray], seed: int) -> Any:
    """One algorithm (:func:`create`) trained on the transitions with seed ``seed``."""
    d3rlpy.seed(seed)
    algo = create(arrays)
    rng = np.random.default_rng(seed)
    observations = arrays["observations"].astype(np.float32)
    actions = arrays["actions"].astype(np.float32)
    actions = actions[:, None] if actions.ndim == 1 else actions
    rewards = arrays["rewards"].astype(np.float32)[:, None]
    next_observations = arrays["next_observations"].astype(np.float32)
    terminals = arrays["terminals"].astype(np.float32)[:, None]
    size, batch_size = len(observations), int(arrays["batch_size"])
    for _ in range(int(arrays["updates"])):
        index = rng.integers(size, size=batch_size)
        batch = d3rlpy.dataset.TransitionMiniBatch(
            observations=observations[index],
            actions=actions[index],
            rewards=rewards[index],
            next_observations=next_observations[index],
            next_actions=actions[index],  # unused: every target here samples or picks its own a′
            terminals=terminals[index],
            intervals=np.ones_like(terminals[index]),
            transitions=[],
        )
        algo.update(batch)
    return algo


@torch.no_grad()
def answer(algos: list[Any], request: dict[str, Any]) -> dict[str, Any]:
    """Q-values or actions (see the module docstring), seed ``s`` on ``request["features"][s]``."""
    features = np.asarray(request["features"], dtype=np.float32)
    if "actions" not in request and isinstance(algos[0], d3rlpy.algos.DiscreteCQL):
        q = [
            [f(torch.as_tensor(x)).q_value.numpy().tolist() for f in a.impl.q_function]
            for a, x in zip(algos, features, strict=True)
        ]
        return {"q": q}
    if "actions" not in request:
        return {"action": [a.predict(x).tolist() for a, x in zip(algos, features, strict=True)]}
    out = []
    for algo, x, action in zip(algos, features, np.asarray(request["actions"], dtype=np.float32), strict=True):
        scaled = algo.config.action_scaler.transform(torch.as_tensor(action))
        out.append([f(torch.as_tensor(x), scaled).q_value[:, 0].numpy().tolist() for f in algo.impl.q_function])
    return {"q": out}


def serve(arrays: dict[str, np.ndarray], requests: TextIO, replies: TextIO) -> None:
    """Train every seed, then answer requests until EOF or ``quit`` (see the module docstring)."""
    torch.set_num_threads(1)  # one core each: symgate trains on the other, concurrently
    algos, seconds = [], []
    for seed in range(int(arrays["seeds"])):
        start = time.perf_counter()
        algos.append(train_seed(arrays, seed))
        seconds.append(time.perf_counter() - start)
    ready = {
        "ready": True,
        "d3rlpy": d3rlpy.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_s": seconds,
    }
    replies.write(json.dumps(ready) + "\n")
    replies.flush()
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("command") == "quit":
            break
        replies.write(json.dumps(answer(algos, request)) + "\n")
        replies.flush()


def main() -> None:
    """Parse arguments, keep stdout for the protocol, train and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("npz", type=Path, help="Encoded transitions and settings (see the module docstring).")
    args = parser.parse_args()
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # d3rlpy's structlog output goes to stderr
    sys.stdout = sys.stderr
    global d3rlpy  # the one lazily imported module
    d3rlpy = importlib.import_module("d3rlpy")
    d3rlpy_runner.d3rlpy = d3rlpy
    with np.load(args.npz, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    serve(arrays, sys.stdin, replies)


if __name__ == "__main__":
    main()
