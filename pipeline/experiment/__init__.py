"""``symgate experiment paper``: the paper's protocol (arXiv 2607.02288) rerun on our PyBullet reacher.

- :mod:`~pipeline.experiment.offline_rl`: Tables 2 (IQL), 7 (CQL) and 2c (IQL, continuous torques).
- :mod:`~pipeline.experiment.distillation`: Table 1, Q-networks distilled onto symmetric and
  asymmetric pessimistic targets.
- :mod:`~pipeline.experiment.report`: mean and 95 % CI over seeds beside the paper's numbers.
"""

from pipeline.experiment.config import TABLES, ExperimentConfig, TableName
from pipeline.experiment.runner import Runner

__all__ = ["TABLES", "ExperimentConfig", "Runner", "TableName"]
