"""The experiment's behaviour policy: the analytic expert or a symmetric DQN, and the premise check.

``ExperimentConfig.behaviour`` picks the expert behind every dataset recipe. ``dqn`` trains the
paper's kind of behaviour policy (:mod:`sim.dqn_expert`) once per (env, DQN config, symmetry spec)
under ``<work>/behaviour/`` and hands its checkpoint to the fleet through
:class:`sim.behaviour.BehaviourConfig`.

The paper's premise is an expert that is greedy in its own action values. :func:`premise_check`
measures it for either expert: on the states of its own greedy episodes in context 0, the expert's
action values Q(s, ·) come from PyBullet rollouts (:func:`~pipeline.experiment.distillation.expert_action_values`:
one action, then the expert), and a state counts against the premise when some other action ties
or beats the expert's own. It also reports success and steps to the goal in context 0 and on
held-out rotations.

``symgate experiment behaviour`` writes both experts' numbers to ``results/behaviour/``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import REPO
from pipeline.experiment.config import ExperimentConfig
from pipeline.experiment.distillation import expert_action_values
from pipeline.io import atomic_write_json, atomic_write_text, load_config
from sim import DISCRETE_ENV_ID
from sim.behaviour import BehaviourConfig, make_behaviour_expert, run_episode
from sim.config import ReacherConfig
from sim.reacher import RotationalReacherDiscreteEnv

#: The reacher's symmetry spec: the DQN's canonical frame.
SYMMETRY_SPEC = REPO / "deploy" / "symmetry" / "reacher.yaml"
#: Reset seeds of the checked episodes start here: far from the DQN's own evaluation seeds (0..eval_episodes-1),
#: which picked its best weights, so the check sees start poses the selection did not.
FIRST_SEED = 10_000
#: Rotations the experts are checked on besides context 0, degrees (none is a C4 angle).
HELD_OUT_DEG: tuple[float, ...] = (37.0, 137.0, 223.0, 301.0)


def behaviour_config(experiment: ExperimentConfig, env: ReacherConfig, work: Path) -> BehaviourConfig:
    """The datasets' behaviour: the analytic expert, or the DQN trained (once, cached) on ``env``."""
    if experiment.behaviour == "analytic":
        return BehaviourConfig()
    from models.symmetry import SymmetrySpec
    from sim.dqn_expert import trained_dqn

    spec = load_config(SYMMETRY_SPEC, SymmetrySpec)
    return BehaviourConfig(expert="dqn", dqn_checkpoint=trained_dqn(env, experiment.dqn, spec, work / "behaviour"))


def premise_check(
    env: ReacherConfig, behaviour: BehaviourConfig, episodes: int, held_out_deg: tuple[float, ...], gamma: float
) -> dict[str, Any]:
    """How greedy an expert is in its own action values, and how well it reaches.

    Args:
        env: The discrete reacher (its horizon, rates and start pose).
        behaviour: Which expert.
        episodes: Greedy episodes in context 0 (reset seeds from ``FIRST_SEED``) whose states are
            checked, and the number of episodes per held-out rotation (the same seeds).
        held_out_deg: Rotations the expert was not trained in, degrees.
        gamma: Discount of the action values.

    Returns:
        ``states``; ``deviation_ties_or_beats`` (the fraction of states where some other action's
        Q ≥ the expert's), ``deviation_beats`` (strictly >), ``mean_best_actions`` (actions tied at
        max Q), ``own_action_value_gap`` (mean of max Q − Q(s, expert's action)); and per context
        set ``success`` and ``steps`` (mean steps to the goal of the successful episodes).
    """
    sim_env = RotationalReacherDiscreteEnv(env)
    expert = make_behaviour_expert(sim_env, behaviour)
    rng = np.random.default_rng(0)  # unused by a greedy expert
    states: list[np.ndarray] = []
    actions: list[int] = []
    outcome: dict[str, dict[str, list[float]]] = {"context_0": {"success": [], "steps": []}}
    seeds = range(FIRST_SEED, FIRST_SEED + episodes)
    for seed in seeds:
        observation, _ = sim_env.reset(seed=seed, options={"context": 0.0})
        for step in range(1, env.max_episode_steps + 1):
            action = int(expert(observation, rng))
            states.append(observation)
            actions.append(action)
            observation, _, terminated, truncated, _ = sim_env.step(action)
            if terminated or truncated:
                outcome["context_0"]["success"].append(float(terminated))
                if terminated:
                    outcome["context_0"]["steps"].append(step)
                break
    outcome["held_out"] = {"success": [], "steps": []}
    for angle in held_out_deg:
        for seed in seeds:
            _, steps, success = run_episode(sim_env, expert, rng, math.radians(angle), seed)
            outcome["held_out"]["success"].append(float(success))
            if success:
                outcome["held_out"]["steps"].append(steps)
    sim_env.close()

    env_spec = {"id": DISCRETE_ENV_ID, "kwargs": {"config": env.model_dump(mode="json", exclude_defaults=True)}}
    names = list(sim_env.observation_names)
    q = expert_action_values(np.stack(states).astype(np.float32), names, env_spec, gamma, behaviour)
    own = q[np.arange(len(actions)), actions]
    others = q.copy()
    others[np.arange(len(actions)), actions] = -np.inf
    best_other = others.max(axis=1)
    result: dict[str, Any] = {
        "expert": behaviour.expert,
        "states": len(states),
        "deviation_ties_or_beats": float(np.mean(best_other >= own)),
        "deviation_beats": float(np.mean(best_other > own)),
        "mean_best_actions": float(np.mean((q == q.max(axis=1, keepdims=True)).sum(axis=1))),
        "own_action_value_gap": float(np.mean(q.max(axis=1) - own)),
        "held_out_deg": list(held_out_deg),
    }
    for name, values in outcome.items():
        result[name] = {
            "episodes": len(values["success"]),
            "success": float(np.mean(values["success"])),
            "steps": float(np.mean(values["steps"])) if values["steps"] else None,
        }
    return result


def _markdown(results: list[dict[str, Any]], env: ReacherConfig, gamma: float) -> str:
    lines = [
        "# Behaviour experts: greedy in their own action values?",
        "",
        f"Discrete reacher at {env.control_hz} Hz, {env.max_episode_steps}-step episodes, γ = {gamma}. "
        "Q(s, a) by PyBullet rollouts (action a, then the expert) on the states of the expert's own greedy "
        "episodes in context 0. Held-out rotations: "
        f"{', '.join(f'{a:g}°' for a in results[0]['held_out_deg'])}.",
        "",
        "| expert | states | a deviation ties or beats | strictly beats | tied best actions | "
        "max Q − Q(own) | success, context 0 | steps, context 0 | success, held out | steps, held out |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:

        def steps(name: str, r: dict[str, Any] = r) -> str:
            value = r[name]["steps"]
            return "–" if value is None else f"{value:.1f}"

        lines.append(
            f"| {r['expert']} | {r['states']} | {r['deviation_ties_or_beats']:.2f} | {r['deviation_beats']:.2f} | "
            f"{r['mean_best_actions']:.2f} | {r['own_action_value_gap']:.4f} | {r['context_0']['success']:.2f} | "
            f"{steps('context_0')} | {r['held_out']['success']:.2f} | {steps('held_out')} |"
        )
    return "\n".join(lines) + "\n"


def write_premise_report(
    experiment: ExperimentConfig,
    env: ReacherConfig,
    work: Path,
    out: Path,
    episodes: int = 4,
    held_out_deg: tuple[float, ...] = HELD_OUT_DEG,
) -> Path:
    """Measure both experts (:func:`premise_check`) and write ``premise.json`` / ``premise.md`` to ``out``.

    Args:
        experiment: Its ``dqn`` settings and ``gamma`` (``behaviour`` is ignored: both are measured).
        env: The discrete reacher.
        work: The experiment's work folder (the DQN's checkpoint cache).
        out: Results folder.
        episodes: Greedy episodes per context.
        held_out_deg: Held-out rotations, degrees.

    Returns:
        The Markdown file.
    """
    results = [
        premise_check(
            env,
            behaviour_config(experiment.model_copy(update={"behaviour": kind}), env, work),
            episodes,
            held_out_deg,
            experiment.gamma,
        )
        for kind in ("analytic", "dqn")
    ]
    payload = {"results": results, "env": env.model_dump(mode="json"), "dqn": experiment.dqn.model_dump(mode="json")}
    atomic_write_json(out / "premise.json", payload)
    markdown = out / "premise.md"
    atomic_write_text(markdown, _markdown(results, env, experiment.gamma))
    return markdown
