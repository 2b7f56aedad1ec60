from typing import Any

import gymnasium as gym
import numpy as np

import sim
from sim.behaviour import make_expert
from sim.rollout import run_lockstep


def _envs(count: int) -> list[gym.Env[Any, Any]]:
    return [gym.make(sim.CONTINUOUS_ENV_ID) for _ in range(count)]


def test_lockstep_matches_one_episode_at_a_time() -> None:
    envs = _envs(3)
    expert = make_expert(envs[0].unwrapped)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)

    def policy(observations: np.ndarray) -> np.ndarray:
        return np.stack([expert(o, rng) for o in observations])

    contexts, seeds = [0.0, 1.0, -2.5], [3, 4, 5]
    batch = run_lockstep(envs, policy, seeds, contexts)
    for env, seed, context, steps in zip(envs, seeds, contexts, batch.steps, strict=True):
        observation, _ = env.reset(seed=seed, options={"context": context})
        count, done = 0, False
        while not done:
            observation, _, terminated, truncated, _ = env.step(expert(observation, rng))
            count += 1
            done = terminated or truncated
        assert count == steps and terminated
    assert batch.success.all() and not batch.non_finite_action.any()
    np.testing.assert_allclose(batch.discounted_return(0.95), 0.95 ** (batch.steps - 1.0))


def test_non_finite_actions_stop_only_their_episode_before_reaching_the_simulator() -> None:
    def policy(observations: np.ndarray) -> np.ndarray:
        actions = np.zeros((len(observations), 2))
        actions[1] = np.nan
        return actions

    envs = _envs(2)
    batch = run_lockstep(envs, policy, [0, 0], [0.0, 0.0])
    assert batch.non_finite_action.tolist() == [False, True]
    assert batch.steps.tolist() == [200, 0] and not batch.success.any()
    assert batch.discounted_return(0.95).tolist() == [0.0, 0.0]
