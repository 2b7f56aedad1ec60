"""The numbers arXiv 2607.02288 reports (test return, mean over 20 seeds; Table 1: 50 seeds).

Rows are dataset recipes (Tables 2, 7) or target kinds (Table 1); columns are strategies or η_max.
Cells the paper did not report are absent; Table 2c (continuous torques) has none, and neither has
Table 8 (critic-only DA): ../shared/science.md records only its finding, that critic-only DA did
nothing (only the actor is queried at test time), not its numbers.
"""

from __future__ import annotations

from pipeline.experiment.config import TableName

_DA = ("none", "aug-d", "aug-d-online", "dac-latent", "dac-output")


def _rows(values: dict[str, tuple[float, ...]], columns: tuple[str, ...]) -> dict[str, dict[str, float]]:
    return {row: dict(zip(columns, cells, strict=True)) for row, cells in values.items()}


#: Test return reported by the paper, by table, row and column.
PAPER_TEST_RETURN: dict[TableName, dict[str, dict[str, float]]] = {
    "2": _rows(
        {
            "expert": (0.49, 0.94, 0.99, 0.95, 0.98),
            "mixed": (0.34, 0.68, 0.71, 0.67, 0.96),
            "suboptimal": (0.32, 0.61, 0.59, 0.61, 0.85),
        },
        _DA,
    ),
    "7": _rows(
        {
            "expert": (0.54, 0.89, 0.88, 0.90, 0.96),
            "mixed": (0.36, 0.76, 0.76, 0.69, 0.78),
            "suboptimal": (0.30, 0.60, 0.57, 0.45, 0.60),
        },
        _DA,
    ),
    "1": {
        "symmetric": {"0.01": 0.76, "0.1": 0.92, "1": 0.99, "10": 0.99},
        "asymmetric": {"0.01": 0.76, "0.1": 0.73, "1": 0.68, "10": 0.23},
    },
    "2c": {},
    "8": {},
}

#: Train return the paper reports where it differs from ~1.0 (Table 1, asymmetric target, η_max = 10).
PAPER_TRAIN_RETURN: dict[TableName, dict[str, dict[str, float]]] = {"1": {"asymmetric": {"10": 0.51}}}

TITLES: dict[TableName, str] = {
    "2": "Table 2: IQL, discrete actions, data from one context, symmetry on the actor",
    "7": "Table 7: CQL, discrete actions, data from one context, symmetry on the actor",
    "2c": "Table 2c: IQL, continuous torques (not in the paper), data from one context, symmetry on the actor",
    "8": "Table 8: IQL, discrete actions, data from one context, symmetry on the critic only (paper: no gain)",
    "1": "Table 1: Q-network distilled onto symmetric vs asymmetric pessimistic targets (C4 training contexts)",
}


def eta_key(eta: float) -> str:
    """The column name of an amount of pessimism: ``0.01``, ``0.1``, ``1``, ``10``."""
    return f"{eta:g}"
