"""Experiment tables: per-seed results → mean and 95 % CI over seeds, beside the paper's numbers.

``results/<mode>/table<N>.json`` is the :class:`TableReport` model (every seed's number, the exact
training configs, software versions, hardware, wall time); ``table<N>.md`` is its human summary
and ``table<N>.png`` a bar plot of the test return with CIs and the paper's values marked.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.experiment.config import TableName
from pipeline.experiment.paper import PAPER_TEST_RETURN, PAPER_TRAIN_RETURN, TITLES
from pipeline.io import atomic_write_text

#: Two-sided 95 % Student-t critical values t_{0.975, df} for df = 1..30.
_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z_975 = 1.959964


def t_critical(df: int) -> float:
    """t_{0.975, df}: tabulated up to 30, then the Cornish-Fisher expansion (error < 1e-3)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be ≥ 1, got {df}")
    if df <= len(_T_975):
        return _T_975[df - 1]
    z = _Z_975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


class Cell(BaseModel):
    """One table cell: the per-seed values, their mean and 95 % t-interval, and the paper's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float = Field(description="Mean over seeds.")
    ci_low: float = Field(description="Lower end of the 95 % Student-t interval over seeds.")
    ci_high: float = Field(description="Upper end of the 95 % Student-t interval over seeds.")
    per_seed: list[float] = Field(description="One value per seed.")
    paper: float | None = Field(None, description="The paper's value, where it reports one.")

    @classmethod
    def of(cls, values: Sequence[float], paper: float | None = None) -> Cell:
        """Mean ± t_{0.975, n-1}·s/√n of ``values`` (n ≥ 2)."""
        array = np.asarray(values, dtype=np.float64)
        mean = float(array.mean())
        half = t_critical(len(array) - 1) * float(array.std(ddof=1)) / math.sqrt(len(array))
        return cls(mean=mean, ci_low=mean - half, ci_high=mean + half, per_seed=array.tolist(), paper=paper)

    def text(self, with_paper: bool = True) -> str:
        """``0.93 ± 0.04 (paper 0.98)``."""
        text = f"{self.mean:.2f} ± {(self.ci_high - self.ci_low) / 2:.2f}"
        if with_paper and self.paper is not None:
            text += f" ({self.paper:.2f})"
        return text


class TableReport(BaseModel):
    """Everything one table run measured and how."""

    model_config = ConfigDict(extra="forbid")

    table: TableName = Field(description="Which table: 2, 7, 1, 2c or 8.")
    title: str = Field(description="What the table shows.")
    mode: str = Field(description="quick or full.")
    rows: list[str] = Field(description="Row names (recipes or target kinds).")
    columns: list[str] = Field(description="Column names (strategies or η_max).")
    test_return: dict[str, dict[str, Cell]] = Field(description="Normalised return on held-out rotations.")
    train_return: dict[str, dict[str, Cell]] = Field(description="Normalised return on the training context(s).")
    test_success: dict[str, dict[str, Cell]] = Field(description="Success rate on held-out rotations.")
    diagnostics: dict[str, dict[str, dict[str, float]]] = Field(
        description="Per cell: mean equivariance error, pessimism, η_max and wall time where measured."
    )
    protocol: dict[str, Any] = Field(description="The experiment config and every job's exact training config.")
    environment: dict[str, Any] = Field(description="Software versions, hardware, device.")
    wall_s: float = Field(description="Wall time of the whole table, s.")
    created: str = Field(description="UTC time the table was written.")


def environment(device: str) -> dict[str, Any]:
    """Versions of what produced the numbers, and the hardware."""
    packages = ("torch", "numpy", "pybullet", "gymnasium", "minari", "rosbags", "onnxruntime")
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "packages": versions,
        "symgate": metadata.version("symgate"),
        "host": platform.node(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {_cpu_name()}",
        "device": device,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def build_report(
    table: TableName,
    mode: str,
    results: list[dict[str, Any]],
    protocol: dict[str, Any],
    device: str,
    wall_s: float,
) -> TableReport:
    """Aggregate per-job results (``row``, ``column``, ``train``/``test`` per-seed values) into a table."""
    rows = list(dict.fromkeys(r["row"] for r in results))
    columns = list(dict.fromkeys(r["column"] for r in results))
    paper_test = PAPER_TEST_RETURN.get(table, {})
    paper_train = PAPER_TRAIN_RETURN.get(table, {})
    test_return: dict[str, dict[str, Cell]] = {row: {} for row in rows}
    train_return: dict[str, dict[str, Cell]] = {row: {} for row in rows}
    test_success: dict[str, dict[str, Cell]] = {row: {} for row in rows}
    diagnostics: dict[str, dict[str, dict[str, float]]] = {row: {} for row in rows}
    for r in results:
        row, column = r["row"], r["column"]
        test_return[row][column] = Cell.of(r["test"]["normalised_return"], paper_test.get(row, {}).get(column))
        train_paper = paper_train.get(row, {}).get(column, 1.0 if paper_test else None)
        train_return[row][column] = Cell.of(r["train"]["normalised_return"], train_paper)
        test_success[row][column] = Cell.of(r["test"]["success"])
        diagnostics[row][column] = {
            key: float(np.mean(r[key]))
            for key in ("equivariance_error", "q_invariance_error", "pessimism", "eta_max", "wall_s")
            if r.get(key) is not None
        }
    return TableReport(
        table=table,
        title=TITLES[table],
        mode=mode,
        rows=rows,
        columns=columns,
        test_return=test_return,
        train_return=train_return,
        test_success=test_success,
        diagnostics=diagnostics,
        protocol=protocol,
        environment=environment(device),
        wall_s=wall_s,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _grid(report: TableReport, cells: dict[str, dict[str, Cell]], with_paper: bool) -> list[str]:
    lines = ["| | " + " | ".join(report.columns) + " |", "|---" * (len(report.columns) + 1) + "|"]
    for row in report.rows:
        values = [cells[row][c].text(with_paper) if c in cells[row] else "—" for c in report.columns]
        lines.append(f"| {row} | " + " | ".join(values) + " |")
    return lines


def markdown(report: TableReport, plot: str | None) -> str:
    """The human summary: test return beside the paper's, train return, success, diagnostics, setup."""
    seeds = len(next(iter(next(iter(report.test_return.values())).values())).per_seed)
    env = report.environment
    lines = [
        f"# {report.title}",
        "",
        f"Mode **{report.mode}**, {seeds} seeds, {report.wall_s / 60:.1f} min on {env['machine']} "
        f"({env['device']}); symgate {env['symgate']}, torch {env['packages']['torch']}, "
        f"PyBullet {env['packages']['pybullet']}; written {report.created}.",
        "",
        "Normalised return on held-out rotations: mean ± 95 % CI half-width over seeds "
        "(paper's value in brackets where it reports one). Returns are divided by the greedy expert's "
        "from the same start.",
        "",
        *_grid(report, report.test_return, with_paper=True),
        "",
    ]
    if plot:
        lines += [f"![test return]({plot})", ""]
    lines += [
        "Normalised return on the training context(s) (paper: ~1.0 everywhere unless shown):",
        "",
        *_grid(report, report.train_return, with_paper=True),
        "",
        "Success rate on held-out rotations:",
        "",
        *_grid(report, report.test_success, with_paper=False),
        "",
        "Diagnostics (means over seeds):",
        "",
    ]
    keys = sorted({k for row in report.diagnostics.values() for d in row.values() for k in d})
    lines += ["| | | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for row in report.rows:
        for column in report.columns:
            values = report.diagnostics[row].get(column, {})
            lines.append(
                f"| {row} | {column} | " + " | ".join(f"{values.get(k, float('nan')):.3g}" for k in keys) + " |"
            )
    lines += ["", "The exact configs of every run are in the JSON file beside this one (`protocol`).", ""]
    return "\n".join(lines)


def plot_test_return(report: TableReport, path: Path) -> None:
    """Grouped bars of the test return with 95 % CIs; the paper's values as black diamonds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / len(report.columns)
    figure, axis = plt.subplots(figsize=(max(7.0, 1.6 + 0.5 * len(report.rows) * len(report.columns)), 3.6))
    for j, column in enumerate(report.columns):
        cells = [report.test_return[row].get(column) for row in report.rows]
        x = np.arange(len(report.rows)) + (j - (len(report.columns) - 1) / 2) * width
        means = [c.mean if c else np.nan for c in cells]
        errors = [[c.mean - c.ci_low if c else 0 for c in cells], [c.ci_high - c.mean if c else 0 for c in cells]]
        axis.bar(x, means, width, yerr=errors, capsize=2, label=column)
        paper = [c.paper if c and c.paper is not None else np.nan for c in cells]
        axis.scatter(x, paper, marker="D", s=14, color="black", zorder=3, label="paper" if j == 0 else None)
    axis.set_xticks(np.arange(len(report.rows)), report.rows)
    axis.set_ylabel("normalised test return")
    axis.set_ylim(0, 1.15)
    axis.set_title(report.title, fontsize=8)
    axis.legend(fontsize=7, ncol=4, loc="upper right", title="η_max" if report.table == "1" else None)
    figure.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    tmp.replace(path)


def write_report(report: TableReport, folder: Path) -> Path:
    """Write ``table<N>.json``, ``.png`` and ``.md`` atomically; returns the Markdown path."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"table{report.table}"
    plot = folder / f"{stem}.png"
    plot_test_return(report, plot)
    atomic_write_text(folder / f"{stem}.json", report.model_dump_json(indent=1) + "\n")
    path = folder / f"{stem}.md"
    atomic_write_text(path, markdown(report, plot.name))
    return path
