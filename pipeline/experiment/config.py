"""Configuration of ``symgate experiment paper`` (pydantic; ``deploy/experiment/paper*.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.train.config import Strategy
from sim.behaviour import ExpertKind, RecipeName
from sim.dqn_expert import DQNConfig

#: The tables of arXiv 2607.02288 we reproduce; ``2c`` is Table 2 with continuous torques (not in the paper),
#: ``8`` Table 2's IQL with the symmetry on the critic only (the paper's ablation).
TableName = Literal["2", "7", "1", "2c", "8"]
TABLES: tuple[TableName, ...] = ("2", "7", "2c", "8", "1")
#: The offline-RL tables (Table 1 distils a given target instead).
OfflineTable = Literal["2", "7", "2c", "8"]
#: The tables whose number of updates ``steps`` must give (Table 8 defaults to Table 2's).
_STEPPED: tuple[OfflineTable, ...] = ("2", "7", "2c")
#: The reacher: ``default`` (``sim.config.ReacherConfig()``) or ``paper`` (``deploy/env/reacher-paper.yaml``).
EnvPreset = Literal["default", "paper"]
#: How the offline-RL datasets cover contexts: one context, or the authors' random start poses × C4.
DataProtocol = Literal["one-context", "c4-poses"]


def _full_protocol_steps() -> dict[OfflineTable, int]:
    return {"2": 20000, "7": 20000, "2c": 20000}


class OfflineRLSettings(BaseModel):
    """Tables 2, 7 and 2c: offline RL on one-context data, symmetry imposed on the actor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recipes: tuple[RecipeName, ...] = Field(
        ("expert", "mixed", "suboptimal"), description="Dataset recipes (rows of the tables)."
    )
    strategies: tuple[Strategy, ...] = Field(
        ("none", "aug-d", "aug-d-online", "dac-latent", "dac-output", "canonical"),
        description="How the C4 symmetry is imposed on the actor (columns of the tables).",
    )
    critic_strategies: tuple[Strategy, ...] = Field(
        ("none", "aug-d", "aug-d-online", "dac-latent", "dac-output"),
        description="Table 8: the strategies applied to the critic only (columns; the actor is not augmented).",
    )
    trajectories: int = Field(
        10, ge=1, description="Trajectories per dataset (one-context) or random start poses (c4-poses: 4 each)."
    )
    data_protocol: DataProtocol = Field(
        "one-context",
        description="one-context: every trajectory in context 0 from the start pose; c4-poses: each random start "
        "pose in the 4 C4 rotations (the authors' collection script).",
    )
    steps: dict[OfflineTable, int] = Field(
        default_factory=_full_protocol_steps,
        description="Gradient updates per run, by table (the presets' 20000 for the full protocol); "
        "Table 8 takes Table 2's unless given.",
    )
    target_updates: int = Field(
        200, gt=0, description="Hard target-network updates per run (every steps / target_updates updates)."
    )
    latent_consistency_weight: float = Field(100.0, ge=0.0, description="λ of DAC-Latent (the paper's 100).")
    lambda_grid: tuple[float, ...] = Field(
        (1.0, 10.0, 100.0), min_length=1, description="λ values `tune-lambda` tries for DAC-Output (the paper's)."
    )

    @field_validator("steps")
    @classmethod
    def _every_table_positive(cls, value: dict[OfflineTable, int]) -> dict[OfflineTable, int]:
        missing = sorted(set(_STEPPED) - set(value))
        if missing or any(steps <= 0 for steps in value.values()):
            raise ValueError(f"needs a positive number of updates for tables 2, 7 and 2c (missing: {missing})")
        return value

    def steps_of(self, table: OfflineTable) -> int:
        """Gradient updates of one table's runs (Table 8: Table 2's unless given)."""
        return self.steps.get(table, self.steps["2"])


class DistillationSettings(BaseModel):
    """Table 1: a fresh Q-network distilled onto symmetric and asymmetric pessimistic targets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    etas: tuple[float, ...] = Field((0.01, 0.1, 1.0, 10.0), description="Amounts of pessimism η_max (columns).")
    trajectories: int = Field(10, ge=1, description="Expert trajectories per dataset, spread over the C4 contexts.")
    steps: int = Field(5000, gt=0, description="Regression steps.")
    batch_size: int = Field(64, gt=0, description="States per member per step (all actions of each state).")
    learning_rate: float = Field(1e-3, gt=0.0, description="Adam learning rate.")
    hidden: tuple[int, ...] = Field((512, 256, 128), description="Hidden widths of the Q-network (the paper's).")


class ExperimentConfig(BaseModel):
    """The paper's protocol: how many seeds, how much training, how evaluation is sized."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: int = Field(
        20, ge=2, description="Independent seeds; each gets a fresh dataset (the paper: 20; Table 1: 50)."
    )
    distillation_seeds: int = Field(50, ge=2, description="Seeds of Table 1 (the paper: 50).")
    test_contexts: int = Field(100, ge=1, description="Held-out rotations, uniform on the circle, ≥ 5° from training.")
    train_episodes: int = Field(20, ge=1, description="Evaluation episodes on the training context(s).")
    gamma: float = Field(0.95, gt=0.0, le=1.0, description="Discount of the returns (the paper: 0.95).")
    env: EnvPreset = Field("default", description="The reacher: default, or paper (deploy/env/reacher-paper.yaml).")
    behaviour: ExpertKind = Field(
        "analytic",
        description="Expert behind every dataset: analytic (IK + PD) or dqn (symmetric DQN, trained once, cached).",
    )
    dqn: DQNConfig = Field(default_factory=DQNConfig, description="How the dqn behaviour expert is trained.")
    offline_rl: OfflineRLSettings = Field(default_factory=OfflineRLSettings, description="Tables 2, 7 and 2c.")
    distillation: DistillationSettings = Field(default_factory=DistillationSettings, description="Table 1.")
