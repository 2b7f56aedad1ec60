"""Training configuration (pydantic; presets under ``deploy/train/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.networks import ActionLikelihood
from pipeline.io import sha256_json

Algorithm = Literal["iql", "cql", "bc"]
Strategy = Literal["none", "aug-d", "aug-d-online", "dac-latent", "dac-output", "canonical"]
AppliedTo = Literal["actor", "critic", "both"]
FeatureKind = Literal["reacher", "generic", "reach"]


class IQLConfig(BaseModel):
    """Implicit Q-Learning (Kostrikov et al., 2022)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expectile: float = Field(0.8, gt=0.0, lt=1.0, description="Expectile τ of the value regression.")
    temperature: float = Field(7.0, gt=0.0, description="Inverse temperature β of the advantage weights.")
    max_weight: float = Field(100.0, gt=0.0, description="Advantage weights exp(β·A) are clipped at this value.")


class CQLConfig(BaseModel):
    """Conservative Q-Learning (Kumar et al., 2020)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(5.0, ge=0.0, description="Weight α of the conservative penalty.")
    sampled_actions: int = Field(10, gt=0, description="Actions sampled per state for the continuous logsumexp.")
    entropy: float = Field(0.0, ge=0.0, description="Fixed entropy coefficient of the SAC-style actor.")
    penalised_heads: Literal["each", "mean"] = Field(
        "each",
        description="Discrete CQL: the α-term on each twin head (CQL-DQN's loss per head) or once on their mean "
        "(d3rlpy's DiscreteCQL: half the push on each head).",
    )


class AugmentationConfig(BaseModel):
    """How the symmetry is imposed (the paper's data-augmentation variants, or canonicalisation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy = Field(
        "dac-output", description="none, aug-d, aug-d-online, dac-latent, dac-output, canonical."
    )
    applied_to: AppliedTo = Field("actor", description="Which networks the strategy is applied to.")
    consistency_weight: float = Field(100.0, ge=0.0, description="λ of the DAC consistency losses.")
    spec: Path = Field(Path("deploy/symmetry/reacher.yaml"), description="Symmetry spec (YAML).")


class EvaluationConfig(BaseModel):
    """Periodic PyBullet rollouts for learning curves (0 disables them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: int = Field(0, ge=0, description="Also evaluate every this many updates (learning curves); 0 = at the end.")
    episodes: int = Field(0, ge=0, description="Episodes per context set (train and test); 0 = no rollouts.")
    train_episodes: int | None = Field(
        None, ge=1, description="Episodes on the training contexts instead of `episodes` (None: the same)."
    )
    held_out: Literal["test", "validation"] = Field(
        "test", description="Held-out contexts rolled out beside the training ones: test, or validation for tuning."
    )


class TrainConfig(BaseModel):
    """Everything ``symgate train`` needs; every field can be overridden on the command line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Algorithm = Field("iql", description="iql, cql or bc (behaviour cloning, the baseline).")
    allow_no_reward: bool = Field(
        False,
        description="Train iql or cql on a dataset ingested with reward rule none (every reward 0: the values "
        "learn nothing, IQL reduces to behaviour cloning); refused otherwise.",
    )
    steps: int = Field(2000, gt=0, description="Gradient updates.")
    batch_size: int = Field(256, gt=0, description="Transitions per member per update.")
    hidden: tuple[int, ...] = Field((256, 256), description="Hidden layer sizes (the paper: 512, 256, 128).")
    features: FeatureKind = Field(
        "reacher",
        description="reacher: the reacher's target-centred FK points + velocities; reach: the same for the robot "
        "profile's URDF chain (needs robot); generic: raw signals, angles as cos/sin.",
    )
    robot: str | None = Field(
        None,
        description="Robot profile the dataset was recorded with (name or path): it must match the dataset's, "
        "and its symmetry spec replaces augmentation.spec.",
    )
    actor_likelihood: ActionLikelihood = Field(
        "tanh-mean",
        description="How the continuous actor scores dataset actions (IQL's AWR, BC): tanh-mean, a Gaussian "
        "around the squashed mean, finite on the action bounds (the IQL authors' and d3rlpy's); squashed, the "
        "tanh-squashed density, whose bang-bang bound actions sit at atanh(1 - 1e-6) (see GaussianTanhActor).",
    )
    actor_lr: float = Field(3e-4, gt=0.0, description="Actor learning rate.")
    critic_lr: float = Field(3e-4, gt=0.0, description="Critic (and value) learning rate.")
    gamma: float = Field(0.95, gt=0.0, le=1.0, description="Discount factor (the paper: 0.95).")
    target_update_every: int = Field(1, gt=0, description="Update the target critics every this many steps.")
    target_polyak: float = Field(
        0.005, gt=0.0, le=1.0, description="Target ← (1-p)·target + p·online at each update; 1 = hard copy."
    )
    iql: IQLConfig = Field(default_factory=IQLConfig, description="IQL settings.")
    cql: CQLConfig = Field(default_factory=CQLConfig, description="CQL settings.")
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig, description="Symmetry.")
    seeds: int = Field(1, gt=0, description="Independent agents trained as one vectorised model.")
    seed: int = Field(0, ge=0, description="Seed of member 0; member i uses seed + i.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    log_every: int = Field(100, gt=0, description="Write metrics every this many updates.")
    checkpoint_every: int = Field(500, gt=0, description="Checkpoint every this many updates.")
    metric_states: int = Field(1024, gt=0, description="Dataset states used for equivariance and pessimism metrics.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="Rollouts.")

    @model_validator(mode="after")
    def _reach_needs_a_robot(self) -> TrainConfig:
        if self.features == "reach" and self.robot is None:
            raise ValueError("features: reach computes the robot profile's forward kinematics; set robot")
        return self

    def sha256(self) -> str:
        """Hash of the canonical JSON form (recorded in checkpoints and, later, the export contract)."""
        return sha256_json(self.model_dump(mode="json"))


def with_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML), e.g. ``iql.expectile=0.7``.

    Raises:
        ValueError: A malformed override, or a value the model rejects (pydantic names the field).
    """
    data = config.model_dump(mode="json")
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ValueError(f"override {override!r}: expected dotted.key=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"override {override!r}: {part!r} is not a section of the training config")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"override {override!r}: unknown field {key!r}")
        node[leaf] = yaml.safe_load(raw)
    return TrainConfig.model_validate(data)
