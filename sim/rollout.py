"""Lock-step rollouts: many reacher episodes advanced together, one batched policy call per control step.

Training evaluation (torch ensembles) and the validation gate (ONNX Runtime) both run policies
this way: stepping N envs one control period at a time lets a single forward pass serve all of
them, which is what makes evaluating hundreds of contexts cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

#: ``(N, D)`` float32 observations → ``(N, A)`` torques or ``(N,)`` action indices.
BatchPolicy = Callable[[NDArray[np.float32]], NDArray[Any]]
#: Called with an env's index after its reset (action None) and after each of its steps (the action it took).
StepObserver = Callable[[int, NDArray[Any] | None], None]


@dataclass(frozen=True)
class EpisodeBatch:
    """Outcome of N episodes, index-aligned with the envs that ran them.

    Attributes:
        steps: Control steps taken, ``(N,)``.
        success: Whether the episode terminated by reaching the goal, ``(N,)``.
        non_finite_action: Whether the policy returned NaN/inf; such an episode is stopped before the
            action reaches the simulator and counts as a failure, ``(N,)``.
    """

    steps: NDArray[np.int64]
    success: NDArray[np.bool_]
    non_finite_action: NDArray[np.bool_]

    def discounted_return(self, gamma: float) -> NDArray[np.float64]:
        """The normalised return γ^(T-1)·success: 1 when the goal is reached on the first step, at most 1."""
        return np.where(self.success, gamma ** (self.steps - 1.0), 0.0)


def run_lockstep(
    envs: Sequence[gym.Env[Any, Any]],
    policy: BatchPolicy,
    seeds: Sequence[int],
    contexts: Sequence[float],
    observe: StepObserver | None = None,
) -> EpisodeBatch:
    """Run one episode in each env, all advanced together.

    Every control step the policy sees the observations of all N envs (finished ones keep their
    last observation, so the batch shape never changes, which ensembles rely on); only the
    actions of live envs are applied.

    Args:
        envs: Reacher envs (any Gymnasium env with the ``context`` reset option).
        policy: The batched policy.
        seeds: Reset seed of each env.
        contexts: Context angle of each env, rad.
        observe: Watches every env after its reset and after each step (to render or record it); it must
            not touch the envs' state.

    Returns:
        Steps, success and non-finite-action flags per env.
    """
    observations = np.stack(
        [
            env.reset(seed=int(s), options={"context": float(c)})[0]
            for env, s, c in zip(envs, seeds, contexts, strict=True)
        ]
    ).astype(np.float32)
    count = len(envs)
    if observe is not None:
        for i in range(count):
            observe(i, None)
    done = np.zeros(count, dtype=bool)
    success = np.zeros(count, dtype=bool)
    non_finite = np.zeros(count, dtype=bool)
    steps = np.zeros(count, dtype=np.int64)
    while not done.all():
        actions = np.asarray(policy(observations))
        finite = np.isfinite(actions.reshape(count, -1)).all(axis=1)
        non_finite |= ~finite & ~done
        done |= non_finite
        for i in np.flatnonzero(~done).tolist():
            observation, _, terminated, truncated, _ = envs[i].step(actions[i])
            observations[i] = observation
            steps[i] += 1
            success[i] = terminated
            done[i] = terminated or truncated
            if observe is not None:
                observe(i, actions[i])
    return EpisodeBatch(steps=steps, success=success, non_finite_action=non_finite)
