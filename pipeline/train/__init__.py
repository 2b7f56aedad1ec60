"""Stage 2, training: symmetry-aligned pessimistic offline RL (IQL, CQL) on a Minari dataset."""

from pipeline.train.config import TrainConfig, with_overrides
from pipeline.train.trainer import TrainingDivergedError, train

__all__ = ["TrainConfig", "TrainingDivergedError", "train", "with_overrides"]
