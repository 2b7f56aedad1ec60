"""``symgate gate``: run the exported ONNX policy in PyBullet on held-out contexts and decide pass/fail.

The order of business:

1. Read the model folder: the contract must parse and the ONNX file's sha256 must match it.
2. Check the contract against the simulated robot (joints by name, control rate, inputs, action)
   and load the graph in ONNX Runtime (CUDA provider when available); its I/O must be the contract's.
3. Run every suite's episodes in lock-step tasks, in parallel worker processes.
4. Compute per-suite and per-context metrics with bootstrap CIs, the generalisation gap, and
   every configured threshold check.
5. Optionally replay chosen episodes (same tasks, seeds and batches, after the evaluation, so no
   number depends on it) into clips for the report (``pipeline.gate.render``) and an MCAP
   recording (``pipeline.gate.recording``).
6. Write ``gate_report.json``, ``gate_report.md``, the plots and clips; on pass only, write
   ``certificate.json`` into the model folder; then the recording (its episode markers name the
   certificate); given a signing key, sign the whole folder into ``model.sig`` (OpenSSF model
   signing); on fail, a stale certificate and signature there are removed.

Anything wrong with the model (a tampered or unloadable file, a contract for another robot,
NaN/inf actions) is a *fail verdict with the reason*, never a crash and never a silent pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from pipeline import __version__
from pipeline.executor import LOCAL, Executor
from pipeline.export.contract import ONNX_FILE, Contract, ContractError, load_contract
from pipeline.gate.certificate import CERTIFICATE_FILE, Certificate, issue_certificate
from pipeline.gate.config import GateConfig, GateSuite
from pipeline.gate.policy import OnnxPolicy, contract_mismatches, graph_mismatches, open_session
from pipeline.gate.recording import RECORDING_FILE, write_recording
from pipeline.gate.render import (
    Camera,
    RenderOptions,
    frame_step,
    workspace_points,
    write_clip,
)
from pipeline.gate.replay import EpisodeTrace, choose_episodes, replay
from pipeline.gate.report import (
    REPORT_JSON,
    REPORT_MD,
    Clip,
    ContextResult,
    Estimate,
    GateReport,
    ModelInfo,
    Rendering,
    SuiteResult,
    ThresholdCheck,
    write_plots,
)
from pipeline.gate.runner import EpisodeRecord, Task, plan_tasks, run_tasks
from pipeline.gate.signing import SIGNATURE_FILE, check_private_key, sign_model
from pipeline.gate.stats import cluster_bootstrap, interval
from pipeline.io import UserInputError, atomic_write_json, atomic_write_text, sha256_file, sha256_json
from sim import ARM_ENV_ID, CONTINUOUS_ENV_ID, DISCRETE_ENV_ID
from sim.config import DomainRandomization
from sim.robots.interface import SimulatedArm


@dataclass(frozen=True)
class GateOutcome:
    """What the gate decided and where it wrote it."""

    report: GateReport
    report_dir: Path
    certificate: Certificate | None
    signature: Path | None


def planned_episodes(config: GateConfig) -> int:
    """How many episodes the gate will run (for a progress bar)."""
    return sum(len(config.contexts.angles(s.contexts)) * s.episodes_per_context for s in config.suites)


def run_gate(
    model_dir: Path,
    config: GateConfig,
    *,
    workers: int | None = None,
    executor: Executor = LOCAL,
    report_dir: Path | None = None,
    signing_key: Path | None = None,
    on_episodes: Callable[[int], None] | None = None,
    render: RenderOptions | None = None,
    record: bool = False,
) -> GateOutcome:
    """Gate one model folder.

    Args:
        model_dir: A folder made by ``symgate export`` (``policy.onnx`` + ``contract.json``).
        config: Suites, statistics and thresholds.
        workers: Local worker processes (default: one per CPU core).
        executor: Local processes, or Ray tasks on a cluster (the model folder at the same path on every
            node); the verdict and every number of the report but the wall time are the same either way.
        report_dir: Where the report goes (default: ``model_dir``; with ``signing_key`` it must be
            ``model_dir``: the signature covers the report).
        signing_key: The gate's private key (``symgate keys init``); on pass the folder is signed
            with it. Without one the certificate is unsigned, and robots refuse it.
        on_episodes: Progress callback, called with the number of episodes just finished.
        render: Replay chosen episodes into GIF clips embedded in the report (None: no clips).
        record: Replay the same episodes into ``gate_episodes.mcap`` next to the report.

    Returns:
        The report (verdict and reasons), its folder, and the certificate if the model passed.

    Raises:
        UserInputError: ``model_dir`` is not a folder (everything wrong *inside* it is a fail
            verdict), the signing key is missing or readable by others, or a report folder other
            than ``model_dir`` was asked for with a signing key.
    """
    if not model_dir.is_dir():
        raise UserInputError(f"{model_dir}: no such model folder")
    workers = workers or os.cpu_count() or 1
    report_dir = report_dir or model_dir
    if signing_key is not None:
        check_private_key(signing_key)  # before minutes of rollouts, not after
        if report_dir.resolve() != model_dir.resolve():
            raise UserInputError(f"--report-dir {report_dir}: the signed model folder must hold its own report")
    reasons: list[str] = []
    contract: Contract | None = None
    provider: str | None = None
    try:
        contract = load_contract(model_dir)
    except ContractError as error:
        reasons.append(str(error))

    episodes: list[EpisodeRecord] = []
    tasks: list[Task] = []
    env_id = ""
    started = time.perf_counter()
    if contract is not None:
        discrete = contract.discrete_action_torques is not None
        config = config.for_robot(config.robot or contract.robot)  # the env is built from the contract's profile
        if config.robot is not None:
            env_id = ARM_ENV_ID
            env = gym.make(env_id, robot=config.robot)
        else:
            env_id = config.env_id or (DISCRETE_ENV_ID if discrete else CONTINUOUS_ENV_ID)
            env = gym.make(env_id, config=config.env)
        reasons += [f"contract does not match the env: {p}" for p in contract_mismatches(contract, _reach_env(env))]
        env.close()
        try:
            session = open_session(model_dir)
            provider = session.get_providers()[0]
            reasons += [f"{model_dir / ONNX_FILE}: {p}" for p in graph_mismatches(contract, session)]
        except Exception as error:  # ONNX Runtime raises its own exception types for unloadable graphs
            reasons.append(f"{model_dir / ONNX_FILE}: ONNX Runtime cannot load it: {error}")
        if not reasons:
            tasks = plan_tasks(config, env_id)
            episodes = run_tasks(model_dir, contract, tasks, workers, on_episodes, executor)
    wall = time.perf_counter() - started
    config_sha = sha256_json(config.model_dump(mode="json"))  # the resolved config (robot from the contract)

    rng = np.random.default_rng(config.seed)
    results = [_suite_result(suite, episodes, config, rng) for suite in config.suites] if episodes else []
    suites = tuple(result for result, _ in results)
    gap, gap_checks = _gap(config, suites, [draws for _, draws in results]) if episodes else (None, [])
    checks = [*(check for suite in suites for check in _suite_checks(config.suite(suite.name), suite)), *gap_checks]
    reasons += [
        f"{s.name}: {s.non_finite_actions} episodes produced NaN/inf actions" for s in suites if s.non_finite_actions
    ]
    reasons += [f"{c.name} = {c.value:.3f}, required {c.comparison} {c.threshold:.3f}" for c in checks if not c.passed]
    traces: list[EpisodeTrace] = []
    clips: tuple[Clip, ...] = ()
    rendering: Rendering | None = None
    report_dir.mkdir(parents=True, exist_ok=True)
    if episodes and contract is not None and (render is not None or record):
        render_started = time.perf_counter()
        worst = render.worst_contexts if render is not None else 4
        choices = choose_episodes(suites, episodes, worst)
        camera = _camera(config, env_id, render) if render is not None else None
        every = frame_step(config.control_hz, render.fps) if render is not None else 1
        gated = contract

        def policy(names: tuple[str, ...]) -> OnnxPolicy:
            return OnnxPolicy(open_session(model_dir), gated, names)

        traces = replay(tasks, episodes, choices, policy, config.control_hz, camera.capture if camera else None, every)
        if render is not None and camera is not None:
            clips, rendering = _write_clips(traces, camera, report_dir, render, render_started)
    onnx_path = model_dir / ONNX_FILE
    report = GateReport(
        symgate_version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        verdict="fail" if reasons else "pass",
        reasons=tuple(reasons),
        model=ModelInfo(
            model_dir=str(model_dir),
            onnx_sha256=sha256_file(onnx_path) if onnx_path.is_file() else None,
            contract_sha256=contract.sha256() if contract else None,
            algorithm=contract.algorithm if contract else None,
            strategy=contract.strategy if contract else None,
            seed=contract.seed if contract else None,
            dataset_id=contract.dataset_id if contract else None,
            execution_provider=provider,
        ),
        gate_config=config.model_dump(mode="json"),
        gate_config_sha256=config_sha,
        train_contexts_deg=tuple(np.rad2deg(config.contexts.angles("train")).tolist()),
        suites=suites,
        success_gap=gap,
        checks=tuple(checks),
        workers=workers,
        executor=executor.describe(),
        wall_time_s=wall,
        episodes=tuple(episodes),
        clips=clips,
        rendering=rendering,
        recording=RECORDING_FILE if traces and record else None,
    )
    plots = write_plots(report, report_dir)
    atomic_write_json(report_dir / REPORT_JSON, report.model_dump(mode="json"))
    atomic_write_text(report_dir / REPORT_MD, report.markdown(plots))
    certificate, signature = None, None
    (model_dir / SIGNATURE_FILE).unlink(missing_ok=True)  # an old signature never outlives a new verdict
    if report.verdict == "pass" and contract is not None:
        certificate = issue_certificate(
            model_dir, contract, config_sha, report_dir / REPORT_JSON, __version__, report.created
        )
    else:
        (model_dir / CERTIFICATE_FILE).unlink(missing_ok=True)  # a failed model must not keep an old certificate
    if traces and record:
        start_ns = int(datetime.fromisoformat(report.created).timestamp() * 1e9)
        write_recording(
            traces, report_dir / RECORDING_FILE, start_ns, report.verdict,
            certificate.certificate_id if certificate else None, report.model.onnx_sha256,
        )  # fmt: skip
    if certificate is not None and signing_key is not None:
        signature = sign_model(model_dir, signing_key)  # last: it covers the clips and the recording
    return GateOutcome(report=report, report_dir=report_dir, certificate=certificate, signature=signature)


def _camera(config: GateConfig, env_id: str, render: RenderOptions) -> Camera:
    """The report's fixed camera, framed on the arm at the start of up to 12 of the gate's contexts and their goals."""
    angles = np.unique(np.concatenate([config.contexts.angles(s.contexts) for s in config.suites]))
    picked = angles[np.linspace(0, len(angles) - 1, min(12, len(angles))).round().astype(int)]
    kwargs = config.env_kwargs(DomainRandomization())
    return Camera.framing(workspace_points(env_id, kwargs, picked.tolist()), render.size_px)


def _write_clips(
    traces: list[EpisodeTrace], camera: Camera, folder: Path, render: RenderOptions, started: float
) -> tuple[tuple[Clip, ...], Rendering]:
    """One GIF per trace, within the size budget; the clips and what they cost."""
    clips: list[Clip] = []
    left_out: list[str] = []
    total = 0
    for trace in traces:
        record = trace.evaluated
        name = f"clip_{record.suite}_c{record.context_index:03d}_e{record.episode:02d}.gif"
        if total >= render.max_report_bytes:
            left_out.append(name)
            continue
        size = write_clip(trace, camera, folder / name, render.fps)
        total += size
        clips.append(
            Clip(
                file=name, suite=record.suite, context_index=record.context_index,
                angle_deg=float(np.rad2deg(record.context_rad)), episode=record.episode, seed=record.seed,
                why=trace.choice.why, success=record.success, steps=record.steps, reproduced=trace.reproduced,
                frames=len(trace.frames), width=camera.width, height=camera.height,
                bytes=size,
            )
        )  # fmt: skip
    rendering = Rendering(
        wall_time_s=time.perf_counter() - started, frames=sum(c.frames for c in clips), bytes=total,
        max_report_bytes=render.max_report_bytes, left_out=tuple(left_out),
    )  # fmt: skip
    return tuple(clips), rendering


def _reach_env(env: gym.Env[object, object]) -> SimulatedArm:
    unwrapped = env.unwrapped
    if not isinstance(unwrapped, SimulatedArm):
        raise UserInputError(f"env {env.spec.id if env.spec else env}: the gate needs a symgate reach env")
    return unwrapped


def _estimates(
    episodes: list[EpisodeRecord], clusters: list[int], config: GateConfig, rng: np.random.Generator
) -> tuple[Estimate, Estimate, Estimate, NDArray[np.float64]]:
    """Success, normalised return and time to goal with CIs (resampling ``clusters``), and the success draws."""
    success = np.array([e.success for e in episodes], dtype=bool)
    steps = np.array([e.steps for e in episodes], dtype=np.float64)
    labels = np.array(clusters, dtype=np.int64)

    def estimate(values: NDArray[np.float64], groups: NDArray[np.int64]) -> tuple[Estimate, NDArray[np.float64]]:
        mean, low, high, draws = cluster_bootstrap(values, groups, config.bootstrap_resamples, config.confidence, rng)
        return Estimate(mean=mean, ci_low=low, ci_high=high), draws

    success_rate, success_draws = estimate(success.astype(np.float64), labels)
    returns, _ = estimate(np.where(success, config.gamma ** (steps - 1.0), 0.0), labels)
    time_to_goal, _ = estimate(steps[success] / config.control_hz, labels[success])
    return success_rate, returns, time_to_goal, success_draws


def _suite_result(
    suite: GateSuite, episodes: list[EpisodeRecord], config: GateConfig, rng: np.random.Generator
) -> tuple[SuiteResult, NDArray[np.float64]]:
    """The suite's metrics, and its bootstrap draws of the success rate (for the gap's CI)."""
    mine = [e for e in episodes if e.suite == suite.name]
    success, returns, time_to_goal, success_draws = _estimates(mine, [e.context_index for e in mine], config, rng)
    per_context = []
    for index in sorted({e.context_index for e in mine}):
        here = [e for e in mine if e.context_index == index]
        c_success, c_return, c_time, _ = _estimates(here, [e.episode for e in here], config, rng)
        per_context.append(
            ContextResult(
                index=index,
                angle_deg=float(np.rad2deg(here[0].context_rad)),
                success=c_success,
                normalised_return=c_return,
                time_to_goal_s=c_time,
            )
        )
    result = SuiteResult(
        name=suite.name,
        context_set=suite.contexts,
        contexts=len(per_context),
        episodes=len(mine),
        randomization=suite.randomization.model_dump(mode="json"),
        success=success,
        normalised_return=returns,
        time_to_goal_s=time_to_goal,
        non_finite_actions=sum(e.non_finite_action for e in mine),
        per_context=tuple(per_context),
    )
    return result, success_draws


def _suite_checks(suite: GateSuite, result: SuiteResult) -> list[ThresholdCheck]:
    wanted = (
        ("success", result.success.mean, suite.min_success),
        ("success CI lower bound", result.success.ci_low, suite.min_success_ci_low),
        ("normalised return", result.normalised_return.mean, suite.min_return),
    )
    return [
        ThresholdCheck(
            name=f"{suite.name}: {what}", value=value, comparison=">=", threshold=limit, passed=value >= limit
        )
        for what, value, limit in wanted
        if limit is not None
    ]


def _gap(
    config: GateConfig, suites: tuple[SuiteResult, ...], success_draws: list[NDArray[np.float64]]
) -> tuple[Estimate | None, list[ThresholdCheck]]:
    """Success on the train suite minus the held-out suite; CI from the two suites' independent bootstrap draws."""
    if config.gap is None:
        return None, []
    names = [suite.name for suite in suites]
    picked = [names.index(name) for name in (config.gap.train_suite, config.gap.held_out_suite)]
    means = [suites[i].success.mean for i in picked]
    draws = [success_draws[i] for i in picked]
    low, high = interval(draws[0] - draws[1], config.confidence)
    gap = Estimate(mean=means[0] - means[1], ci_low=low, ci_high=high)
    if config.gap.max_success_gap is None:
        return gap, []
    limit = config.gap.max_success_gap
    name = f"success gap {config.gap.train_suite} - {config.gap.held_out_suite}"
    return gap, [ThresholdCheck(name=name, value=gap.mean, comparison="<=", threshold=limit, passed=gap.mean <= limit)]
