"""Context sets of the Rotational Reacher: the rotation angles an agent trains, tunes and is tested on.

A context is a rotation angle θ about the base z axis. The paper trains on one context (or the
four C4 rotations) and tests zero-shot on angles drawn uniformly on the circle. Held-out sets keep
a margin around every training angle, so that "held out" means "not near anything seen".
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ContextSetName = Literal["train", "test", "validation"]

#: Seed-sequence keys that keep the test and validation draws independent of each other.
_DRAW_KEYS: dict[str, int] = {"test": 1, "validation": 2}


def wrap_angle(angle: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """Wrap angles to ``[-π, π)``.

    Args:
        angle: Angles in rad.

    Returns:
        The wrapped angles, same shape.
    """
    return np.asarray((np.asarray(angle) + math.pi) % (2.0 * math.pi) - math.pi, dtype=np.float64)


class ContextSets(BaseModel):
    """Which rotation angles make up the train, test (held-out) and validation sets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_deg: tuple[float, ...] = Field(
        (0.0, 90.0, 180.0, 270.0), description="Training context angles in degrees (default: the C4 rotations)."
    )
    test_count: int = Field(100, ge=1, description="Number of held-out test angles, uniform on the circle.")
    validation_count: int = Field(
        100, ge=1, description="Number of validation angles for tuning, uniform on the circle."
    )
    held_out_margin_deg: float = Field(
        5.0, ge=0.0, lt=45.0, description="Test/validation angles keep at least this distance from every train angle."
    )
    seed: int = Field(0, ge=0, description="Seed of the test/validation draws, so every run sees the same sets.")
    sector_deg: tuple[float, float] = Field(
        (-180.0, 180.0),
        description="Range of allowed angles in degrees (joint limits can bound it); held-out sets are drawn in it.",
    )

    @field_validator("train_deg")
    @classmethod
    def _non_empty(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("at least one training context is required")
        return value

    @model_validator(mode="after")
    def _train_in_sector(self) -> ContextSets:
        low, high = self.sector_deg
        if not -180.0 <= low < high <= 180.0:
            raise ValueError(f"sector_deg: need -180 <= low < high <= 180, got {self.sector_deg}")
        outside = [
            angle
            for angle in self.train_deg
            if not low <= float(wrap_angle(math.radians(angle))) * 180 / math.pi <= high
        ]
        if outside and (low, high) != (-180.0, 180.0):
            raise ValueError(f"train_deg: {outside} lie outside sector_deg {self.sector_deg}")
        return self

    def angles(self, name: ContextSetName) -> NDArray[np.float64]:
        """The context angles of one set, in rad, wrapped to ``[-π, π)``.

        Args:
            name: ``train``, ``test`` or ``validation``.

        Returns:
            A 1-D array of angles. ``train`` keeps the declared order; held-out sets are
            deterministic draws from ``seed``.
        """
        train = wrap_angle(np.deg2rad(np.asarray(self.train_deg, dtype=np.float64)))
        if name == "train":
            return train
        count = self.test_count if name == "test" else self.validation_count
        rng = np.random.default_rng([self.seed, _DRAW_KEYS[name]])
        margin = math.radians(self.held_out_margin_deg)
        low, high = (math.radians(bound) for bound in self.sector_deg)
        kept: list[float] = []
        while len(kept) < count:
            candidates = rng.uniform(low, high, size=2 * count)
            distance = np.abs(wrap_angle(candidates[:, None] - train[None, :])).min(axis=1)
            kept.extend(candidates[distance >= margin].tolist())
        return np.asarray(kept[:count], dtype=np.float64)
