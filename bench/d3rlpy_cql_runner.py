"""d3rlpy side of ``bench_correctness.py``: trains d3rlpy 2.8.1's ``DiscreteCQL`` seeds, then answers Q queries.

Runs in ``.venv-bench`` (see ``bench_train.py``) and imports nothing from symgate. It reads an
``.npz`` (no pickle) of transitions, already encoded into symgate's network inputs (the
normalised forward-kinematics features), so that both sides learn from identical inputs:
``observations (N, F)``, ``actions (N,)`` (indices), ``rewards (N,)``, ``next_observations (N, F)``,
``terminals (N,)``, and the scalars ``n_actions``, ``seeds``, ``updates``, ``gamma``,
``batch_size``, ``hidden (L,)``, ``learning_rate``, ``alpha``, ``target_update_interval``,
``n_critics``.

It trains seed ``s`` = 0..seeds-1 with ``d3rlpy.seed(s)`` on ``updates`` minibatches drawn
uniformly with replacement from the same transitions (``numpy`` generator seeded ``s``), fed to
``algo.update`` as ``TransitionMiniBatch`` es. Then it writes ``{"ready": true, ...}`` (versions,
seconds per seed) and answers each request line ``{"features": (S, B, F)}`` with
``{"q": (S, n_critics, B, n)}``: every critic's Q-values of every action, seed ``s`` on
``features[s]``. EOF or ``{"command": "quit"}`` ends it. d3rlpy's logs go to stderr.
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

d3rlpy: Any = None  # imported in main(), once stdout is set aside for the protocol


def train_seed(arrays: dict[str, np.ndarray], seed: int) -> Any:
    """One ``DiscreteCQL`` trained on the transitions with seed ``seed``."""
    d3rlpy.seed(seed)
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
    observations = arrays["observations"].astype(np.float32)
    algo.create_impl((observations.shape[1],), int(arrays["n_actions"]))
    rng = np.random.default_rng(seed)
    actions = arrays["actions"].astype(np.float32)[:, None]
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
            next_actions=actions[index],  # unused by DQN-style targets
            terminals=terminals[index],
            intervals=np.ones_like(terminals[index]),
            transitions=[],
        )
        algo.update(batch)
    return algo


@torch.no_grad()
def q_values(algos: list[Any], features: np.ndarray) -> list[Any]:
    """Every critic's Q of every action, ``(S, n_critics, B, n)``, seed ``s`` on ``features[s]``."""
    out = []
    for algo, x in zip(algos, features, strict=True):
        tensor = torch.as_tensor(np.asarray(x, dtype=np.float32))
        out.append([q_func(tensor).q_value.numpy().tolist() for q_func in algo.impl.q_function])
    return out


def serve(arrays: dict[str, np.ndarray], requests: TextIO, replies: TextIO) -> None:
    """Train every seed, then answer Q requests until EOF or ``quit`` (see the module docstring)."""
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
        replies.write(json.dumps({"q": q_values(algos, np.asarray(request["features"]))}) + "\n")
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
    with np.load(args.npz, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    serve(arrays, sys.stdin, replies)


if __name__ == "__main__":
    main()
