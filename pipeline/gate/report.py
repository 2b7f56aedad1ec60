"""The gate report: per-suite and per-context metrics with CIs, threshold checks, Markdown, plots and clips.

``gate_report.json`` is the :class:`GateReport` model; ``gate_report.md`` is its human summary and
embeds two plots: success against context angle on a polar axis (train contexts marked), and the
distributions of normalised return and time to goal per suite; then the clips of chosen episodes
(``pipeline.gate.render``), each listed with its context angle and outcome.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.gate.config import GateConfig
from pipeline.gate.runner import EpisodeRecord

REPORT_JSON = "gate_report.json"
REPORT_MD = "gate_report.md"
POLAR_PNG = "gate_success_polar.png"
RETURNS_PNG = "gate_returns.png"


class Estimate(BaseModel):
    """A mean with its bootstrap confidence interval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float = Field(description="Point estimate (NaN when there is nothing to average).")
    ci_low: float = Field(description="Lower bound of the confidence interval.")
    ci_high: float = Field(description="Upper bound of the confidence interval.")

    def text(self, digits: int = 2, ci: bool = True) -> str:
        """``0.93 [0.88, 0.97]`` (``0.93`` without ``ci``), or ``n/a``."""
        if math.isnan(self.mean):
            return "n/a"
        if not ci:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"


class ContextResult(BaseModel):
    """Metrics of one context of a suite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(description="Index in the context set.")
    angle_deg: float = Field(description="Context rotation, degrees.")
    success: Estimate = Field(description="Success rate over this context's episodes.")
    normalised_return: Estimate = Field(description="Mean of γ^(T-1)·success.")
    time_to_goal_s: Estimate = Field(description="Mean time to reach the goal over successful episodes, s.")


class SuiteResult(BaseModel):
    """Metrics of one suite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Suite name.")
    context_set: str = Field(description="Context set the suite ran on.")
    contexts: int = Field(description="Number of contexts.")
    episodes: int = Field(description="Number of episodes.")
    randomization: dict[str, Any] = Field(description="Domain randomisation of this suite.")
    success: Estimate = Field(description="Success rate, CI from a cluster bootstrap over contexts.")
    normalised_return: Estimate = Field(description="Mean normalised return γ^(T-1)·success.")
    time_to_goal_s: Estimate = Field(description="Mean time to goal over successful episodes, s.")
    non_finite_actions: int = Field(description="Episodes stopped because the model returned NaN/inf.")
    per_context: tuple[ContextResult, ...] = Field(description="The same metrics per context.")


class ThresholdCheck(BaseModel):
    """One threshold of the gate config and whether the model met it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="What is checked, e.g. 'test: success'.")
    value: float = Field(description="Measured value.")
    comparison: Literal[">=", "<="] = Field(description="The value must be >= or <= the threshold.")
    threshold: float = Field(description="The configured threshold.")
    passed: bool = Field(description="Whether the check passed.")


class Clip(BaseModel):
    """A rendered replay of one gate episode (a GIF next to the report)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="GIF file name, next to the report.")
    suite: str = Field(description="Suite of the episode.")
    context_index: int = Field(description="Index of its context in the suite's context set.")
    angle_deg: float = Field(description="Context rotation, degrees.")
    episode: int = Field(description="Episode index within the context.")
    seed: int = Field(description="Reset seed of the episode (the gate's).")
    why: tuple[str, ...] = Field(description="Why it was chosen: worst, typical pass, training context.")
    success: bool = Field(description="Whether the evaluated episode reached the goal.")
    steps: int = Field(description="Control steps of the evaluated episode.")
    reproduced: bool = Field(description="Whether the replay matched the evaluated episode (steps and success).")
    frames: int = Field(description="Frames in the GIF.")
    width: int = Field(description="Frame width, pixels.")
    height: int = Field(description="Frame height, pixels.")
    bytes: int = Field(description="File size.")


class Rendering(BaseModel):
    """What rendering the clips cost, and what the size budget left out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_time_s: float = Field(description="Wall time of the replays, frames and GIF encoding, s.")
    frames: int = Field(description="Frames rendered in all clips.")
    bytes: int = Field(description="Total size of the clips.")
    max_report_bytes: int = Field(description="The size budget of the clips.")
    left_out: tuple[str, ...] = Field((), description="Episodes not rendered because the budget was spent.")


class ModelInfo(BaseModel):
    """What was gated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: str = Field(description="The model folder.")
    onnx_sha256: str | None = Field(None, description="sha256 of policy.onnx as read (None if unreadable).")
    contract_sha256: str | None = Field(None, description="sha256 of the contract (None if invalid).")
    algorithm: str | None = Field(None, description="Training algorithm.")
    strategy: str | None = Field(None, description="How the symmetry was imposed.")
    seed: int | None = Field(None, description="Training seed of the exported member.")
    dataset_id: str | None = Field(None, description="Minari dataset the policy was trained on.")
    execution_provider: str | None = Field(None, description="ONNX Runtime provider the gate ran the model on.")


class GateReport(BaseModel):
    """Everything the gate measured and decided."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symgate_version: str = Field(description="symgate version that ran the gate.")
    created: str = Field(description="UTC time the gate finished, ISO 8601.")
    verdict: Literal["pass", "fail"] = Field(description="pass only if every check passed and nothing went wrong.")
    reasons: tuple[str, ...] = Field(description="Why the verdict is fail (empty on pass).")
    model: ModelInfo = Field(description="The gated model.")
    gate_config: dict[str, Any] = Field(description="The resolved gate config.")
    gate_config_sha256: str = Field(description="Hash of the resolved gate config.")
    train_contexts_deg: tuple[float, ...] = Field(description="The env's training context angles (for the plots).")
    suites: tuple[SuiteResult, ...] = Field(description="Per-suite results, in config order.")
    success_gap: Estimate | None = Field(None, description="Success on train_suite minus held_out_suite, with CI.")
    checks: tuple[ThresholdCheck, ...] = Field(description="Every configured threshold and its outcome.")
    workers: int = Field(description="Worker processes used.")
    executor: str = Field("local", description="What ran the episodes: local processes or a Ray cluster.")
    wall_time_s: float = Field(description="Wall time of the rollouts, s.")
    episodes: tuple[EpisodeRecord, ...] = Field(description="Every episode, for re-analysis.")
    clips: tuple[Clip, ...] = Field((), description="Rendered replays of chosen episodes (empty with --no-render).")
    rendering: Rendering | None = Field(None, description="Cost of the clips; None when not rendered.")
    recording: str | None = Field(None, description="MCAP file of the chosen episodes (gate --record), next to it.")

    def markdown(self, plots: list[str]) -> str:
        """The human summary, with the plots (file names next to it) embedded."""
        verdict = "**PASS**" if self.verdict == "pass" else "**FAIL**"
        m = self.model
        lines = [
            f"# Validation gate: {verdict}",
            "",
            f"Model `{m.model_dir}` ({m.algorithm}, {m.strategy}, seed {m.seed}, dataset `{m.dataset_id}`), "
            f"ONNX sha256 `{(m.onnx_sha256 or 'unreadable')[:16]}…`, run on {m.execution_provider or 'nothing'}; "
            f"gate config sha256 `{self.gate_config_sha256[:16]}…`; symgate {self.symgate_version}, {self.created}.",
            "",
        ]
        if self.reasons:
            lines += ["## Why it failed", "", *(f"- {reason}" for reason in self.reasons), ""]
        if self.suites:
            lines += [
                "## Suites",
                "",
                "| suite | contexts | episodes | success | normalised return | time to goal (s) | NaN/inf actions |",
                "|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {s.name} | {s.contexts} ({s.context_set}) | {s.episodes} | {s.success.text()} | "
                f"{s.normalised_return.text(3)} | {s.time_to_goal_s.text()} | {s.non_finite_actions} |"
                for s in self.suites
            ]
            gap = f"{self.success_gap.text()}" if self.success_gap else "not checked"
            lines += ["", f"Generalisation gap (success, train - held-out): {gap}. Intervals: bootstrap 95 % CIs.", ""]
        if self.checks:
            lines += ["## Thresholds", "", "| check | value | threshold | result |", "|---|---|---|---|"]
            lines += [
                f"| {c.name} | {c.value:.3f} | {c.comparison} {c.threshold:.3f} | {'pass' if c.passed else 'FAIL'} |"
                for c in self.checks
            ]
            lines.append("")
        for suite in self.suites:
            failing = [c for c in suite.per_context if c.success.mean < 1.0]
            if failing:
                worst = sorted(failing, key=lambda c: c.success.mean)[:12]
                angles = ", ".join(f"{c.angle_deg:.0f}° ({c.success.mean:.0%})" for c in worst)
                lines.append(f"- {suite.name}: {len(failing)} of {suite.contexts} contexts not always solved: {angles}")
        lines += ["", *(f"![{plot}]({plot})" for plot in plots), ""]
        lines += self._clips_markdown()
        return "\n".join(lines)

    def _clips_markdown(self) -> list[str]:
        if self.rendering is None:
            return (
                [f"Recording of the episodes (MCAP, opens in Foxglove): `{self.recording}`.", ""]
                if self.recording
                else []
            )
        r = self.rendering
        lines = [
            "## Episodes",
            "",
            "Replays of chosen gate episodes (same seeds, re-run after the evaluation: no number above depends on "
            f"them): green circle = goal, red = end-effector trail. {len(self.clips)} clips, {r.frames} frames, "
            f"{r.bytes / 1e6:.2f} MB (budget {r.max_report_bytes / 1e6:.1f} MB), rendered in {r.wall_time_s:.1f} s.",
            "",
        ]
        if self.recording:
            lines += [f"The same episodes as an MCAP recording (opens in Foxglove): `{self.recording}`.", ""]
        for suite in self.suites:
            clips = [c for c in self.clips if c.suite == suite.name]
            if not clips:
                continue
            lines += [f"### {suite.name}", "", "| clip | context | outcome | chosen as |", "|---|---|---|---|"]
            for c in clips:
                outcome = f"reached in {c.steps} steps" if c.success else f"missed ({c.steps} steps)"
                replay = "" if c.reproduced else " (the replay differed!)"
                lines.append(
                    f"| ![{c.file}]({c.file}) | {c.angle_deg:.0f}° (#{c.context_index}, episode {c.episode}) | "
                    f"{outcome}{replay} | {', '.join(c.why)} |"
                )
            lines.append("")
        if r.left_out:
            lines += [f"Left out (size budget): {', '.join(r.left_out)}.", ""]
        return lines


def write_plots(report: GateReport, folder: Path) -> list[str]:
    """Draw the polar success plot and the return / time-to-goal distributions; returns the file names."""
    if not report.suites:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10")
    # One ring per suite; each context is a dot at its angle, coloured by its success rate.
    figure = plt.figure(figsize=(7.5, 7))
    axis: Any = figure.add_subplot(projection="polar")  # a PolarAxes, which the stubs type as plain Axes
    success_map = plt.get_cmap("RdYlGn")
    for ring, suite in enumerate(report.suites, start=1):
        angles = np.deg2rad([c.angle_deg for c in suite.per_context])
        success = np.array([c.success.mean for c in suite.per_context])
        axis.plot(np.linspace(0, 2 * np.pi, 200), np.full(200, ring), color="0.85", linewidth=0.8, zorder=1)
        dots = axis.scatter(
            angles, np.full(len(angles), ring), c=success, cmap=success_map, vmin=0.0, vmax=1.0,
            s=np.where(success < 1.0, 60, 24), edgecolors="black", linewidths=0.3, zorder=3,
        )  # fmt: skip
    rings = len(report.suites)
    for j, angle in enumerate(np.deg2rad(report.train_contexts_deg)):
        axis.plot([angle, angle], [0, rings + 0.6], color="black", linestyle="--", linewidth=1.0)
        axis.scatter([angle], [rings + 0.6], marker="*", s=220, color="gold", edgecolors="black", zorder=5,
                     label="training context" if j == 0 else None)  # fmt: skip
    axis.set_ylim(0, rings + 0.8)
    axis.set_yticks(range(1, rings + 1), [f"{s.name} {s.success.mean:.0%}" for s in report.suites], fontsize=8)
    axis.set_rlabel_position(80)
    figure.colorbar(dots, ax=axis, shrink=0.6, pad=0.08, label="success rate of the context")
    axis.set_title(f"Gate {report.verdict.upper()}: success by context angle, one ring per suite")
    axis.legend(loc="lower left", bbox_to_anchor=(-0.1, -0.1), fontsize=8)
    figure.tight_layout()
    figure.savefig(folder / POLAR_PNG, dpi=110)
    plt.close(figure)

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    by_suite = {s.name: [e for e in report.episodes if e.suite == s.name] for s in report.suites}
    gamma = float(report.gate_config["gamma"])
    control_hz = GateConfig.model_validate(report.gate_config).control_hz  # the robot profile's, or the reacher's
    returns = {name: [gamma ** (e.steps - 1) if e.success else 0.0 for e in eps] for name, eps in by_suite.items()}
    bins = np.linspace(0.0, 1.05 * max(max(r, default=0.0) for r in returns.values()) + 1e-6, 30)
    for k, (name, values) in enumerate(returns.items()):
        left.hist(values, bins=bins, alpha=0.5, color=colours(k), label=name, density=True)
    left.set_xlabel("normalised return γ^(T-1)·success")
    left.set_ylabel("density")
    left.set_title("Return distribution per suite")
    left.legend()
    times = [[e.steps / control_hz for e in episodes if e.success] for episodes in by_suite.values()]
    right.boxplot([t if t else [math.nan] for t in times], tick_labels=list(by_suite))
    right.set_ylabel("time to goal (s), successful episodes")
    right.set_title("Time to goal per suite")
    figure.tight_layout()
    figure.savefig(folder / RETURNS_PNG, dpi=110)
    plt.close(figure)
    return [POLAR_PNG, RETURNS_PNG]
