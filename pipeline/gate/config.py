"""Configuration of the validation gate: which suites of episodes to run and the thresholds a model must meet."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.fleet.config import paper_env
from sim.config import DomainRandomization, ReacherConfig
from sim.contexts import ContextSetName, ContextSets
from sim.robots.profile import load_profile


class GateSuite(BaseModel):
    """One batch of episodes: a context set, how often each context is tried, optional perturbations and thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Suite name (used in the report and plots).")
    contexts: ContextSetName = Field(description="Context set of the env config: train, test or validation.")
    episodes_per_context: int = Field(1, ge=1, description="Episodes per context (each with its own start noise).")
    randomization: DomainRandomization = Field(
        default_factory=DomainRandomization, description="Domain randomisation for this suite (off by default)."
    )
    min_success: float | None = Field(None, ge=0.0, le=1.0, description="Fail below this success rate.")
    min_success_ci_low: float | None = Field(
        None, ge=0.0, le=1.0, description="Fail when the lower bound of the success rate's CI is below this."
    )
    min_return: float | None = Field(None, ge=0.0, le=1.0, description="Fail below this mean normalised return.")


class GapThreshold(BaseModel):
    """The generalisation gap: success on the training contexts minus success on held-out ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_suite: str = Field("train", description="Suite on the contexts the data came from.")
    held_out_suite: str = Field("test", description="Suite on contexts never seen in training.")
    max_success_gap: float | None = Field(0.1, ge=0.0, le=1.0, description="Fail when train - held-out exceeds this.")


class GateConfig(BaseModel):
    """The PyBullet validation gate: the env, the suites, the statistics and the pass/fail thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env_id: str | None = Field(
        None, description="Gymnasium id of the env; null = the symgate reacher matching the model's action type."
    )
    robot: str | None = Field(
        None,
        description="Robot profile whose env (symgate/ArmReach-v0) runs the suites; null: the model contract's robot, "
        "or the reacher env below for reacher models.",
    )
    env: ReacherConfig = Field(
        default_factory=paper_env,
        description="The simulated robot and task; its context sets define the suites (train: the data's contexts).",
    )
    suites: tuple[GateSuite, ...] = Field(
        (
            GateSuite(name="train", contexts="train", episodes_per_context=50),
            GateSuite(name="test", contexts="test", min_success=0.9, min_success_ci_low=0.8),
            GateSuite(
                name="test-randomized",
                contexts="test",
                randomization=DomainRandomization(
                    link_mass_scale=(0.9, 1.1),
                    joint_friction=(0.0, 0.02),
                    action_latency_steps=(0, 1),
                    observation_noise_std=0.002,
                ),
                min_success=0.8,
            ),
        ),
        min_length=1,
        description="Suites of episodes, run in order.",
    )
    gap: GapThreshold | None = Field(default_factory=GapThreshold, description="Generalisation gap check; null = off.")
    gamma: float = Field(0.95, gt=0.0, le=1.0, description="Discount of the normalised return γ^(T-1)·success.")
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="Level of the bootstrap confidence intervals.")
    bootstrap_resamples: int = Field(2000, ge=100, description="Bootstrap resamples (contexts drawn with replacement).")
    seed: int = Field(0, ge=0, description="Seed of the episodes' start noise and randomisation, and the bootstrap.")
    episodes_per_task: int = Field(
        16, ge=1, description="Episodes a worker runs in lock-step per task (one batched ONNX call per step)."
    )

    @model_validator(mode="after")
    def _names_resolve(self) -> GateConfig:
        names = [suite.name for suite in self.suites]
        if len(set(names)) != len(names):
            raise ValueError(f"suite names must be unique, got {names}")
        if self.gap is not None:
            for field in ("train_suite", "held_out_suite"):
                if getattr(self.gap, field) not in names:
                    raise ValueError(f"gap.{field}: no suite named {getattr(self.gap, field)!r}; suites are {names}")
        return self

    def for_robot(self, robot: str | None) -> GateConfig:
        """This config with the suites run on ``robot``'s env (None: unchanged)."""
        return self if robot is None else self.model_copy(update={"robot": robot})

    @property
    def contexts(self) -> ContextSets:
        """The context sets the suites draw from: the robot profile's, or the reacher env's."""
        return load_profile(self.robot).profile.contexts if self.robot is not None else self.env.contexts

    @property
    def control_hz(self) -> float:
        """The control rate of the gate's env, Hz."""
        return float(load_profile(self.robot).profile.control_hz if self.robot is not None else self.env.control_hz)

    def env_kwargs(self, randomization: DomainRandomization) -> dict[str, Any]:
        """``gym.make`` keyword arguments of the env with a suite's randomisation applied (JSON-ready)."""
        if self.robot is not None:
            return {"robot": self.robot, "randomization": randomization.model_dump(mode="json")}
        return {"config": self.env.model_copy(update={"randomization": randomization}).model_dump(mode="json")}

    def suite(self, name: str) -> GateSuite:
        """The suite called ``name``."""
        return next(suite for suite in self.suites if suite.name == name)
