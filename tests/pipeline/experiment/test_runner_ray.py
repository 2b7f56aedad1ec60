"""An experiment table on a real Ray cluster: the same numbers as the local executor for the same seeds."""

from pathlib import Path

import pytest

from pipeline.executor import Executor
from pipeline.experiment import Runner
from pipeline.experiment.report import TableReport
from tests.pipeline.experiment.test_harness import TINY

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # two table-2 runs at CI size: minutes on 2 cores


def table(tmp_path: Path, executor: Executor) -> TableReport:
    runner = Runner(TINY, mode="quick", work=tmp_path / "work", results=tmp_path / "results", workers=2, device="cpu",
                    executor=executor)  # fmt: skip
    return TableReport.model_validate_json((runner.run("2").parent / "table2.json").read_text(encoding="utf-8"))


def test_ray_table_equals_local(tmp_path: Path, ray_cluster: str) -> None:
    local = table(tmp_path / "local", Executor())
    ray = table(tmp_path / "ray", Executor("ray", address=ray_cluster))
    for cells in ("test_return", "train_return", "test_success"):
        assert getattr(ray, cells) == getattr(local, cells)
    assert ray.protocol["jobs"] == local.protocol["jobs"]
