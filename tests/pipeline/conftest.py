"""A small real dataset (simulated fleet → bags → Minari), built once per test session."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.fleet import FleetConfig, record_fleet
from pipeline.ingest import IngestConfig, ingest
from sim import DISCRETE_ENV_ID


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("train-datasets")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        fleet = tmp_path_factory.mktemp("train-fleet")
        record_fleet(
            FleetConfig.model_validate({"robots": 2, "episodes": 5, "recipe": "mixed"}), fleet / "c", workers=1
        )
        ingest([fleet / "c"], IngestConfig(), "symgate/train-test-v0", workers=1)
        expert = FleetConfig.model_validate({"robots": 1, "episodes": 5, "recipe": "expert"})
        record_fleet(expert, fleet / "e", workers=1)
        ingest([fleet / "e"], IngestConfig(), "symgate/train-test-expert-v0", workers=1)
        discrete = FleetConfig.model_validate({"robots": 1, "episodes": 4, "recipe": "mixed", "discrete": True})
        record_fleet(discrete, fleet / "d", workers=1)
        ingest([fleet / "d"], IngestConfig(env_id=DISCRETE_ENV_ID), "symgate/train-test-discrete-v0", workers=1)
        yield root


@pytest.fixture
def dataset(datasets_root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets_root))
    return "symgate/train-test-v0"


@pytest.fixture
def discrete_dataset(datasets_root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets_root))
    return "symgate/train-test-discrete-v0"


@pytest.fixture
def expert_dataset(datasets_root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Expert data from context 0 only (the paper's one-context setting)."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets_root))
    return "symgate/train-test-expert-v0"
