import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from models.symmetry import SymmetrySpec
from pipeline import REPO
from pipeline.io import load_config
from sim import dqn_expert
from sim.behaviour import BehaviourConfig, EpsilonRandomPolicy, make_behaviour_expert, recipe_policies
from sim.config import ReacherConfig
from sim.dqn_expert import (
    DQNConfig,
    DQNExpert,
    EpsilonGreedyPolicy,
    SymmetricQNetwork,
    double_dqn_loss,
    double_dqn_target,
    greedy_episodes,
    huber,
    train_dqn,
    trained_dqn,
)
from sim.reacher import RotationalReacherDiscreteEnv, RotationalReacherEnv
from tests.sim.test_behaviour import observations, rotate_observation

SPEC = load_config(REPO / "deploy" / "symmetry" / "reacher.yaml", SymmetrySpec)
ENV = ReacherConfig()


@cache
def random_network() -> SymmetricQNetwork:
    env = RotationalReacherDiscreteEnv(ENV)
    names, actions = env.observation_names, env.action_names
    env.close()
    torch.manual_seed(0)
    return SymmetricQNetwork(names, SPEC, actions, 9, (32, 32), ENV.urdf, 10.0).eval()


def test_double_dqn_target_and_huber_by_hand() -> None:
    # s′ of sample 0 is terminal: y = r; sample 1: the online net picks a′ = 0, the target net values it at 4.
    target = double_dqn_target(
        reward=torch.tensor([1.0, 0.5]),
        terminated=torch.tensor([1.0, 0.0]),
        next_q_online=torch.tensor([[1.0, 3.0], [2.0, 0.0]]),
        next_q_target=torch.tensor([[10.0, 20.0], [4.0, 7.0]]),
        gamma=0.9,
    )
    torch.testing.assert_close(target, torch.tensor([1.0, 0.5 + 0.9 * 4.0]))
    # H_1(0.5) = 0.125 (quadratic), H_1(-3) = 3 - 0.5 = 2.5 (linear), H_2(-3) = 2·(3 - 1) = 4.
    torch.testing.assert_close(huber(torch.tensor([0.5, -3.0]), 1.0), torch.tensor([0.125, 2.5]))
    torch.testing.assert_close(huber(torch.tensor([-3.0]), 2.0), torch.tensor([4.0]))


def test_double_dqn_loss_by_hand() -> None:
    # Q(s, ·) = w·s + b with s a scalar; two actions.
    online, target = nn.Linear(1, 2), nn.Linear(1, 2)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        online.bias.copy_(torch.tensor([0.0, 0.5]))
        target.weight.copy_(torch.tensor([[2.0], [0.0]]))
        target.bias.copy_(torch.tensor([0.0, 1.0]))
    batch = {
        "observation": torch.tensor([[1.0], [2.0]]),
        "action": torch.tensor([0, 1]),
        "reward": torch.tensor([0.0, 1.0]),
        "next_observation": torch.tensor([[3.0], [-1.0]]),
        "terminated": torch.tensor([0.0, 0.0]),
    }
    # Sample 0: Q_θ(s′=3) = (3, -2.5) → a′ = 0, Q_θ̄(3, 0) = 6, y = 0 + 0.5·6 = 3; Q_θ(1, 0) = 1; x = -2 (linear).
    # Sample 1: Q_θ(s′=-1) = (-1, 1.5) → a′ = 1, Q_θ̄(-1, 1) = 1, y = 1 + 0.5·1 = 1.5; Q_θ(2, 1) = -1.5; x = -3.
    loss = double_dqn_loss(online, target, batch, gamma=0.5, delta=1.0)
    torch.testing.assert_close(loss, torch.tensor(((2 - 0.5) + (3 - 0.5)) / 2))
    torch.autograd.backward(loss)
    # dL/dx = clip(x, ±δ)/B = -0.5 each; x_0 = w_0·1 + b_0 - y_0, x_1 = w_1·2 + b_1 - y_1; y carries no gradient.
    assert online.weight.grad is not None and online.bias.grad is not None
    torch.testing.assert_close(online.weight.grad, torch.tensor([[-0.5], [-1.0]]))
    torch.testing.assert_close(online.bias.grad, torch.tensor([-0.5, -0.5]))
    assert target.weight.grad is None


@settings(max_examples=200, deadline=None)
@given(observation=observations, theta=st.floats(-math.pi, math.pi))
def test_q_is_rotation_invariant_by_construction(observation: np.ndarray, theta: float) -> None:
    network = random_network()  # untrained: the invariance owes nothing to training
    with torch.no_grad():
        q = network(torch.as_tensor(observation, dtype=torch.float32))
        rotated = network(torch.as_tensor(rotate_observation(observation, theta), dtype=torch.float32))
    assert q.abs().max() > 1e-3  # not a degenerate constant
    torch.testing.assert_close(rotated, q, atol=1e-4, rtol=1e-4)


def test_checkpoint_roundtrip_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = DQNConfig(total_steps=300, learning_starts=100, eval_every=300, eval_episodes=1, hidden=(16,))
    folder = trained_dqn(ENV, config, SPEC, tmp_path, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["dqn.json", "q_network.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    expert = DQNExpert.load(folder)
    meta = json.loads((folder / "dqn.json").read_text())
    assert meta["training"]["updates"] == (300 - 100) // 2
    # Same config: loaded from the cache, never retrained.
    monkeypatch.setattr(dqn_expert, "train_dqn", lambda *a, **k: pytest.fail("retrained a cached DQN"))
    assert trained_dqn(ENV, config, SPEC, tmp_path, progress=False) == folder
    # The loaded network equals the trained one on random observations.
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        reference, _ = train_dqn(ENV, config, SPEC, progress=False)  # deterministic: same seed, same result
    probe = np.random.default_rng(1).uniform(-1, 1, size=(64, 6)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(expert.q_values(probe), reference(torch.as_tensor(probe)).double().numpy())
    # An edited config no longer matches its hash.
    meta["dqn"]["gamma"] = 0.9
    (folder / "dqn.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="hash does not match"):
        DQNExpert.load(folder)
    with pytest.raises(ValueError, match="not a DQN expert checkpoint"):
        DQNExpert.load(tmp_path / "missing")


def test_recipes_with_the_dqn_expert(tmp_path: Path) -> None:
    config = DQNConfig(total_steps=200, learning_starts=100, eval_every=200, eval_episodes=1, hidden=(16,))
    folder = trained_dqn(ENV, config, SPEC, tmp_path, progress=False)
    behaviour = BehaviourConfig(expert="dqn", dqn_checkpoint=folder)
    env = RotationalReacherDiscreteEnv(ENV)
    policies = recipe_policies("mixed", env, 5, behaviour)
    assert [type(p) for p in policies] == [DQNExpert] * 3 + [EpsilonGreedyPolicy] * 2
    suboptimal = policies[-1]
    assert isinstance(suboptimal, EpsilonGreedyPolicy) and suboptimal.epsilon == 0.6
    assert isinstance(make_behaviour_expert(env, behaviour), DQNExpert)
    assert isinstance(recipe_policies("suboptimal", env, 1)[0], EpsilonRandomPolicy)  # analytic stays the default
    rng = np.random.default_rng(0)
    observation, _ = env.reset(seed=0, options={"context": 0.0})
    actions = [suboptimal(observation, rng) for _ in range(2000)]
    greedy = policies[0](observation, rng)
    # P(greedy action) = 1 - ε + ε/9 = 0.4 + 0.6/9.
    assert np.mean(np.asarray(actions) == greedy) == pytest.approx(0.4 + 0.6 / 9, abs=0.04)
    with pytest.raises(ValueError, match="asymmetric"):
        recipe_policies("asymmetric", env, 1, behaviour)
    with pytest.raises(ValueError, match="continuous torques"):
        recipe_policies("expert", RotationalReacherEnv(ENV), 1, behaviour)
    with pytest.raises(ValueError, match=r"trained on another env \(differs in \['control_hz'\]\)"):
        recipe_policies("expert", RotationalReacherDiscreteEnv(ReacherConfig(control_hz=25)), 1, behaviour)
    with pytest.raises(ValueError, match="needs dqn_checkpoint"):
        BehaviourConfig(expert="dqn")


def random_closest_approach(env: RotationalReacherDiscreteEnv, seeds: range) -> float:
    rng, closest = np.random.default_rng(0), []
    for seed in seeds:
        _, info = env.reset(seed=seed, options={"context": 0.0})
        nearest = info["distance"]
        for _ in range(env.config.max_episode_steps):
            _, _, terminated, truncated, info = env.step(int(rng.integers(9)))
            nearest = min(nearest, info["distance"])
            if terminated or truncated:
                break
        closest.append(nearest)
    return float(np.mean(closest))


@pytest.mark.slow  # ~25 s on an idle core, ~110 s on the shared 2-core VM
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_short_training_run_learns_to_reach(seed: int) -> None:
    torch.set_num_threads(1)
    config = DQNConfig(total_steps=5000, learning_starts=500, eval_every=500, eval_episodes=2, seed=seed)
    network, record = train_dqn(ENV, config, SPEC, progress=False)
    env = RotationalReacherDiscreteEnv(ENV)
    learned = greedy_episodes(network, env, 0.0, range(100, 104))  # start noise it was not evaluated on
    random = random_closest_approach(env, range(100, 120))  # ~0.49 m from a 1.54 m start; 7 % reach the goal
    assert learned.closest < 0.5 * random, (learned, random, record["evaluations"])
