"""Seed statistics and the table files."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.experiment.report import Cell, TableReport, build_report, t_critical, write_report


@pytest.mark.parametrize(("df", "expected"), [(1, 12.706), (2, 4.303), (19, 2.093), (40, 2.021), (120, 1.980)])
def test_t_critical_values(df: int, expected: float) -> None:
    assert t_critical(df) == pytest.approx(expected, abs=1e-3)


def test_t_critical_rejects_zero_degrees_of_freedom() -> None:
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_critical(0)


def test_cell_is_the_student_t_interval() -> None:
    cell = Cell.of([0.2, 0.4, 0.6], paper=0.5)
    assert cell.mean == pytest.approx(0.4)
    assert cell.ci_high - cell.mean == pytest.approx(4.303 * 0.2 / np.sqrt(3), rel=1e-3)
    assert cell.text() == "0.40 ± 0.50 (0.50)"


@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=30))
def test_interval_contains_the_mean_and_shrinks_to_it_for_equal_seeds(values: list[float]) -> None:
    cell = Cell.of(values)
    assert cell.ci_low <= cell.mean + 1e-12 and cell.mean <= cell.ci_high + 1e-12
    equal = Cell.of([values[0]] * len(values))
    assert equal.ci_low == pytest.approx(equal.ci_high)


def results(rows: list[str], columns: list[str], seeds: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    return [
        {
            "row": row,
            "column": column,
            "train": {"normalised_return": rng.uniform(0, 1, seeds).tolist(), "success": [1.0] * seeds},
            "test": {"normalised_return": rng.uniform(0, 1, seeds).tolist(), "success": [0.5] * seeds},
            "equivariance_error": [0.1] * seeds,
            "wall_s": 3.0,
        }
        for row in rows
        for column in columns
    ]


def test_written_table_has_every_cell_the_paper_numbers_and_a_plot(tmp_path: Path) -> None:
    rows, columns = ["expert", "mixed"], ["none", "dac-output", "canonical"]
    report = build_report("2", "quick", results(rows, columns, 3), {"experiment": {}}, "cpu", 12.0)
    markdown = write_report(report, tmp_path).read_text(encoding="utf-8")
    assert (tmp_path / "table2.png").stat().st_size > 1000
    loaded = TableReport.model_validate(json.loads((tmp_path / "table2.json").read_text(encoding="utf-8")))
    assert loaded == report
    assert loaded.test_return["expert"]["none"].paper == 0.49  # the paper's Table 2
    assert loaded.test_return["mixed"]["canonical"].paper is None  # the paper has no canonical column
    assert "(0.98)" in markdown and "![test return](table2.png)" in markdown
    for row in rows:
        assert sum(line.startswith(f"| {row} |") for line in markdown.splitlines()) == 3 + len(columns)
