"""The experiment's behaviour switch (analytic | dqn) and the premise check, on real fleets and PyBullet."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.experiment import ExperimentConfig
from pipeline.experiment.behaviour import behaviour_config, premise_check
from pipeline.experiment.data import C4_CONTEXTS, ONE_CONTEXT, DatasetSpec, build_dataset, reacher_preset
from pipeline.experiment.distillation import dataset_specs, expert_action_values
from pipeline.experiment.offline_rl import plan_training
from pipeline.train.buffer import load_offline_data
from sim import DISCRETE_ENV_ID
from sim.behaviour import BehaviourConfig
from sim.config import ReacherConfig
from sim.dqn_expert import DQNExpert
from sim.reacher import RotationalReacherDiscreteEnv

#: A DQN that trains in seconds: not a good expert, but a real one (the tests check plumbing, not skill).
TINY_DQN = {"total_steps": 300, "learning_starts": 100, "eval_every": 300, "eval_episodes": 1, "hidden": [16]}


def test_analytic_is_the_default_and_dqn_trains_once(tmp_path: Path) -> None:
    env = ReacherConfig()
    assert behaviour_config(ExperimentConfig(), env, tmp_path) == BehaviourConfig()
    experiment = ExperimentConfig.model_validate({"behaviour": "dqn", "dqn": TINY_DQN})
    behaviour = behaviour_config(experiment, env, tmp_path)
    assert behaviour.expert == "dqn" and behaviour.dqn_checkpoint is not None
    assert behaviour.dqn_checkpoint.parent == tmp_path / "behaviour"
    written = (behaviour.dqn_checkpoint / "dqn.json").stat().st_mtime_ns
    assert behaviour_config(experiment, env, tmp_path) == behaviour  # cached: same folder, not rewritten
    assert (behaviour.dqn_checkpoint / "dqn.json").stat().st_mtime_ns == written
    # Every discrete dataset of the tables uses it; the continuous table 2c keeps the analytic expert.
    assert {spec.behaviour for spec in dataset_specs(experiment, behaviour)} == {behaviour}
    for table, expected in (("2", behaviour), ("2c", BehaviourConfig())):
        jobs = plan_training(table, experiment, tmp_path, "cpu", behaviour=behaviour)  # type: ignore[arg-type]
        assert {spec.behaviour for job in jobs for spec in job.datasets} == {expected}


def test_a_dqn_dataset_goes_through_fleet_and_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    experiment = ExperimentConfig.model_validate({"behaviour": "dqn", "dqn": TINY_DQN})
    behaviour = behaviour_config(experiment, ReacherConfig(), tmp_path)
    spec = DatasetSpec("expert", True, 0, 2, ONE_CONTEXT, 3, behaviour=behaviour)
    analytic = DatasetSpec("expert", True, 0, 2, ONE_CONTEXT, 3)
    assert spec.dataset_id != analytic.dataset_id and behaviour.dqn_checkpoint is not None
    assert behaviour.dqn_checkpoint.name in spec.dataset_id
    dataset_id = build_dataset(spec, tmp_path)
    manifest = json.loads(next((tmp_path / "fleet").glob("*/fleet.json")).read_text())
    assert manifest["config"]["behaviour"]["expert"] == "dqn"
    # The logged actions are the greedy DQN's on the logged states (ingest resamples the 200 Hz joint
    # states onto the control ticks, so a state near a decision boundary may flip: most must agree).
    data = load_offline_data(dataset_id, torch.device("cpu"), 0.95)
    expert = DQNExpert.load(behaviour.dqn_checkpoint)
    greedy = expert.q_values(data.observations.numpy()).argmax(axis=1)
    assert np.mean(greedy == data.actions.numpy()) > 0.9


def test_premise_check_measures_the_analytic_expert() -> None:
    result = premise_check(ReacherConfig(), BehaviourConfig(), 1, (137.0,), 0.95)
    assert result["context_0"]["success"] == 1.0 and result["held_out"]["success"] == 1.0
    assert result["states"] == result["context_0"]["steps"]  # every state of its one episode
    # The analytic expert is not greedy in its own Q: deviations often tie or beat it.
    assert 0.05 < result["deviation_ties_or_beats"] <= 1.0
    assert result["deviation_beats"] <= result["deviation_ties_or_beats"]
    assert result["mean_best_actions"] >= 1.0 and result["own_action_value_gap"] >= 0.0


def test_action_values_follow_the_dqn_expert(tmp_path: Path) -> None:
    experiment = ExperimentConfig.model_validate({"behaviour": "dqn", "dqn": TINY_DQN})
    env_config = ReacherConfig()
    behaviour = behaviour_config(experiment, env_config, tmp_path)
    assert behaviour.dqn_checkpoint is not None
    expert = DQNExpert.load(behaviour.dqn_checkpoint)
    # A state 8 cm short of the goal at 90°: some actions reach it soon, others never under this weak expert.
    env = RotationalReacherDiscreteEnv(env_config)
    # IK puts the hand on (0, 0.7) at q = (0.776, 1.59); the shoulder 0.12 rad short moves it 0.7 · 0.12 m away.
    observation, _ = env.reset(seed=0, options={"context": 0.0, "joint_position": [0.776 - 0.12, 1.59]})
    observation[4:6] = [0.0, 0.7]  # the goal of context 90°
    spec = {"id": DISCRETE_ENV_ID, "kwargs": {"config": env_config.model_dump(mode="json", exclude_defaults=True)}}
    q = expert_action_values(observation[None], list(env.observation_names), spec, 0.95, behaviour)[0]
    assert q.max() > 0.0 and q.min() < q.max()  # some actions reach the goal, others do not
    # The same rollouts by hand: action a for one step, then the greedy DQN; Q = γ^(n-1) at the goal, else 0.
    rng = np.random.default_rng(0)
    for action in range(9):
        state = {"joint_position": observation[:2].astype(float), "joint_velocity": observation[2:4].astype(float)}
        env.reset(options={"context": math.pi / 2, **state})
        step, value, next_action = 0, 0.0, action
        while True:
            next_observation, _, terminated, truncated, _ = env.step(next_action)
            step += 1
            if terminated:
                value = 0.95 ** (step - 1)
            if terminated or truncated:
                break
            next_action = expert(next_observation, rng)
        assert q[action] == pytest.approx(value), action


def test_the_dqn_collects_c4_poses_data_on_the_paper_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    experiment = ExperimentConfig.model_validate({"behaviour": "dqn", "dqn": TINY_DQN, "env": "paper"})
    paper = reacher_preset("paper")
    behaviour = behaviour_config(experiment, paper, tmp_path)  # trained on the 20 Hz preset, its own horizon
    assert behaviour.dqn_checkpoint is not None
    assert DQNExpert.load(behaviour.dqn_checkpoint).env_config.control_hz == paper.control_hz == 20
    # c4-poses starts every session from another pose: the DQN acts there too (any state).
    spec = DatasetSpec("expert", True, 0, 1, C4_CONTEXTS, 3, "paper", "c4-poses", behaviour)
    load_offline_data(build_dataset(spec, tmp_path), torch.device("cpu"), 0.95)
    # A DQN trained on the default 50 Hz reacher is refused for the 20 Hz preset's data.
    default = behaviour_config(experiment, ReacherConfig(), tmp_path)
    wrong = DatasetSpec("expert", True, 0, 1, ONE_CONTEXT, 3, "paper", behaviour=default)
    with pytest.raises(ValueError, match="trained on another env"):
        build_dataset(wrong, tmp_path)
