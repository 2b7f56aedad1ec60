"""Configuration of the Rotational Reacher environment (pydantic; loadable from YAML)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from sim.contexts import ContextSetName, ContextSets
from sim.robot import ASSETS_DIR, DEFAULT_URDF

_Number = TypeVar("_Number", int, float)


def _ordered_range(value: tuple[_Number, _Number]) -> tuple[_Number, _Number]:
    low, high = value
    if not 0 <= low <= high:
        raise ValueError(f"need 0 <= low <= high, got ({low}, {high})")
    return value


#: A (low, high) range of non-negative values.
FloatRange = Annotated[tuple[float, float], AfterValidator(_ordered_range)]
IntRange = Annotated[tuple[int, int], AfterValidator(_ordered_range)]


class DomainRandomization(BaseModel):
    """Per-episode perturbations of the simulated robot. All off by default; the gate turns them on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    link_mass_scale: FloatRange = Field(
        (1.0, 1.0), description="Range of the factor each moving link's mass is multiplied by, drawn per episode."
    )
    joint_friction: FloatRange = Field(
        (0.0, 0.0), description="Range of the Coulomb friction torque (N·m) of each joint, drawn per episode."
    )
    action_latency_steps: IntRange = Field(
        (0, 0), description="Range of the delay, in control steps, before a command reaches the motors, per episode."
    )
    observation_noise_std: float = Field(
        0.0, ge=0.0, description="Std of Gaussian noise added to joint positions (rad) and velocities (rad/s)."
    )

    @model_validator(mode="after")
    def _positive_masses(self) -> DomainRandomization:
        if self.link_mass_scale[0] <= 0:
            raise ValueError("link_mass_scale: masses must stay positive")
        return self

    @property
    def enabled(self) -> bool:
        """True when any perturbation is switched on."""
        return self != DomainRandomization()


class ReacherConfig(BaseModel):
    """The Rotational Reacher contextual MDP: robot, timing, task geometry, reward and contexts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urdf: Path = Field(
        DEFAULT_URDF,
        description="Robot description (planar 2-link arm URDF); a bare name of a bundled one is found in sim/assets/.",
    )
    physics_hz: int = Field(
        250, gt=0, description="Physics rate in Hz; an integer multiple of control_hz (240 Hz cannot give 50 Hz)."
    )
    control_hz: int = Field(50, gt=0, description="Rate at which the policy acts, in Hz; actions are held in between.")
    max_episode_steps: int = Field(
        200, gt=0, description="Time limit in control steps; the episode is truncated there."
    )
    goal_distance: float = Field(0.7, gt=0.0, description="Distance from the shoulder to the goal, in m.")
    success_radius: float = Field(
        0.05, gt=0.0, description="The episode succeeds when the hand is this close to the goal, in m."
    )
    success_rule: Literal["end_point", "swept_path"] = Field(
        "end_point",
        description="end_point: the hand at the end of a control step; swept_path: anywhere on its path in the step.",
    )
    gravity: float = Field(
        9.81, ge=0.0, description="Gravity along -z, m/s²; the arm is horizontal, so it exerts no joint torque."
    )
    max_joint_speed: float | None = Field(
        None, gt=0.0, description="Cap on each joint's speed in rad/s, enforced by the physics engine; null: none."
    )
    start_mode: Literal["relative", "fixed"] = Field(
        "relative",
        description="relative: start pose fixed relative to the goal bearing (exact rotation); fixed: same joints.",
    )
    start_shoulder_offset_deg: float = Field(
        120.0,
        description="Start shoulder angle minus the goal bearing (relative mode) or the start angle itself (fixed).",
    )
    start_elbow_deg: float = Field(30.0, description="Start elbow angle in degrees.")
    start_noise_deg: float = Field(
        2.0, ge=0.0, description="Half-width of the uniform noise added to both start joint angles, in degrees."
    )
    distance_shaping: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Weight w of the shaping: r = (1-w)·success + w·shaping (shaping_rule); 0 = sparse reward.",
    )
    shaping_rule: Literal["progress", "new_minimum"] = Field(
        "progress",
        description="progress: (d_prev - d)/d_start; new_minimum: (1 - d/d_max)/T on a step that sets a new minimum d.",
    )
    reset_context_set: ContextSetName = Field(
        "train", description="Set the context is drawn from at reset when options={'context': θ} is not given."
    )
    contexts: ContextSets = Field(default_factory=ContextSets, description="Train / test / validation context sets.")
    randomization: DomainRandomization = Field(
        default_factory=DomainRandomization, description="Domain randomisation (all off by default)."
    )

    @field_validator("urdf")
    @classmethod
    def _bundled_urdf(cls, value: Path) -> Path:
        bundled = ASSETS_DIR / value
        return bundled if value.parent == Path() and not value.exists() and bundled.is_file() else value

    @model_validator(mode="after")
    def _integral_action_repeat(self) -> ReacherConfig:
        if self.physics_hz % self.control_hz:
            raise ValueError(
                f"physics_hz={self.physics_hz} is not an integer multiple of control_hz={self.control_hz}; "
                "a fractional action repeat would make the MDP time-varying"
            )
        return self

    @classmethod
    def from_env_spec(cls, env_spec: Mapping[str, Any]) -> ReacherConfig:
        """The config in a reacher env spec (``{"id": ..., "kwargs": {"config": ...}}``: a dataset's eval_env_spec)."""
        return cls.model_validate(env_spec.get("kwargs", {}).get("config") or {})

    @property
    def action_repeat(self) -> int:
        """Physics steps per control step."""
        return self.physics_hz // self.control_hz

    @property
    def control_dt(self) -> float:
        """Control period in s."""
        return 1.0 / self.control_hz

    @property
    def start_offset_rad(self) -> tuple[float, float]:
        """Start (shoulder offset, elbow) in rad."""
        return math.radians(self.start_shoulder_offset_deg), math.radians(self.start_elbow_deg)
