"""``symgate experiment paper``: the paper's protocol (arXiv 2607.02288) rerun on our PyBullet reacher.

- :mod:`~pipeline.experiment.offline_rl`: Tables 2 (IQL), 7 (CQL), 2c (IQL, continuous torques) and 8
  (IQL, symmetry on the critic only); every job resumes from its saved result.
- :mod:`~pipeline.experiment.tuning`: ``tune-lambda``, DAC-Output's λ per recipe on validation contexts.
- :mod:`~pipeline.experiment.distillation`: Table 1, Q-networks distilled onto symmetric and
  asymmetric pessimistic targets.
- :mod:`~pipeline.experiment.report`: mean and 95 % CI over seeds beside the paper's numbers.
"""

from pipeline.experiment.config import TABLES, ExperimentConfig, TableName
from pipeline.experiment.runner import Runner

__all__ = ["TABLES", "ExperimentConfig", "Runner", "TableName"]
