"""Shared by the benchmarks: alternate repeats, take medians, write one JSON result per run."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def alternate(repeats: int, **contenders: Callable[[], float]) -> dict[str, list[float]]:
    """Run each contender once per repeat, interleaved, so machine noise hits all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            samples[name].append(run())
    return samples


def write_result(name: str, rows: list[dict[str, Any]], samples: dict[str, list[float]]) -> Path:
    """Write ``bench/results/<name>-<date>-<host>.json`` and print the rows as a table."""
    now = datetime.now(UTC)
    result = {
        "benchmark": name,
        "rows": rows,
        "samples": samples,
        "host": platform.node(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": sys.version.split()[0],
        "date": now.isoformat(timespec="seconds"),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}-{now:%Y-%m-%d}-{platform.node()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(
            f"{row['metric']}: symgate {row['symgate']:.4g}, reference {row['reference']:.4g} "
            f"({row['reference_name']}), ratio {row['ratio']:.2f}, target {row['target']}"
        )
    print(f"written to {out}")
    return out


def median(values: list[float]) -> float:
    """Median of the samples."""
    return statistics.median(values)


def exported_model(work: Path, steps: int = 200) -> Path:
    """A small fleet → dataset → IQL run → ``work/model`` through the real pipeline (for serving benchmarks)."""
    from pipeline.export.export import export_run
    from pipeline.fleet import FleetConfig, record_fleet
    from pipeline.ingest import IngestConfig, ingest
    from pipeline.train import TrainConfig, train

    os.environ["MINARI_DATASETS_PATH"] = str(work / "datasets")
    record_fleet(FleetConfig.model_validate({"robots": 1, "episodes": 4}), work / "fleet", workers=1)
    ingest([work / "fleet"], IngestConfig(), "symgate/bench-model-v0", workers=1)
    spec = Path(__file__).resolve().parents[1] / "deploy/symmetry/reacher.yaml"
    config = TrainConfig.model_validate(
        {"steps": steps, "log_every": steps, "checkpoint_every": steps, "augmentation": {"spec": str(spec)}}
    )
    train(config, "symgate/bench-model-v0", work / "run")
    export_run(work / "run", work / "model")
    return work / "model"
