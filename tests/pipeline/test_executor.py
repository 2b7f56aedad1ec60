"""The executor under ingest, gate and experiment: Ray gives what the local pool gives, and survives a killed worker.

Tests marked ``ray`` run on a real Ray cluster (``ray_cluster``) inside a loopback-only network
namespace: ``make ray-test``.
"""

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import minari
import numpy as np
import pytest

from pipeline.executor import RAY_INSTALL, Executor, ExecutorError, run_ordered
from pipeline.fleet import record_fleet
from pipeline.ingest import IngestConfig, QualityReport, ingest
from pipeline.ingest.bag import IngestError
from tests.conftest import small_fleet_config
from tests.faults import kill_mid_run

REPO = Path(__file__).resolve().parents[2]
#: Importing ``ray`` fails in the child, for real: a meta-path finder refuses it before any other.
NO_RAY = """
import sys
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoRay())
from pipeline.cli import main
sys.argv = ["symgate", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(
    "command", [["ingest", "bags"], ["gate", "model"], ["experiment", "paper", "--table", "2", "--out", "work"]]
)
def test_executor_ray_without_ray_says_how_to_install_it(command: list[str], tmp_path: Path) -> None:
    (tmp_path / "bags").mkdir()
    (tmp_path / "model").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", NO_RAY, *command, "--executor", "ray"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert RAY_INSTALL in " ".join(result.stdout.split()), result.stdout


def test_ray_address_needs_executor_ray() -> None:
    with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
        Executor("local", address="127.0.0.1:6379")


def _square(x: int) -> int:
    return x * x


def test_local_pool_returns_results_in_item_order() -> None:
    assert run_ordered(_square, list(range(7)), executor=Executor(), workers=2, start_method="spawn") == [
        x * x for x in range(7)
    ]


# ----------------------------------------------------------------------------- on a real Ray cluster


@pytest.fixture(scope="module")
def fleet4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four robots, two episodes each: four bags."""
    out = tmp_path_factory.mktemp("fleet4") / "fleet"
    record_fleet(small_fleet_config(robots=4, episodes=2), out, workers=1)
    return out


@pytest.fixture
def datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def assert_same_dataset(a_id: str, b_id: str, a: QualityReport, b: QualityReport) -> None:
    assert a.bags == b.bags
    x, y = minari.load_dataset(a_id), minari.load_dataset(b_id)
    assert x.total_episodes == y.total_episodes > 0
    for p, q in zip(x.iterate_episodes(), y.iterate_episodes(), strict=True):
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(p, field), getattr(q, field))
    assert x.storage.metadata["symgate"] == y.storage.metadata["symgate"]


@pytest.fixture
def ray_executor(ray_cluster: str) -> Iterator[Executor]:
    yield Executor("ray", address=ray_cluster)


@pytest.mark.ray
def test_ray_ingest_of_a_4_bag_fleet_equals_local(fleet4: Path, datasets: Path, ray_executor: Executor) -> None:
    _, local = ingest([fleet4], IngestConfig(), "symgate/local-v0", workers=2)
    _, ray = ingest([fleet4], IngestConfig(), "symgate/ray-v0", executor=ray_executor)
    assert_same_dataset("symgate/local-v0", "symgate/ray-v0", local, ray)


@pytest.mark.ray
def test_ray_ingest_retries_a_killed_worker_and_gives_the_same_dataset(
    fleet4: Path, datasets: Path, ray_executor: Executor
) -> None:
    _, local = ingest([fleet4], IngestConfig(), "symgate/local-v0", workers=1)
    _, (_, ray) = kill_mid_run(
        "symgate-ingest", lambda: ingest([fleet4], IngestConfig(), "symgate/killed-v0", executor=ray_executor)
    )
    assert_same_dataset("symgate/local-v0", "symgate/killed-v0", local, ray)


@pytest.mark.ray
def test_ray_ingest_without_retries_fails_clearly_and_writes_nothing(
    fleet4: Path, datasets: Path, ray_cluster: str
) -> None:
    no_retries = Executor("ray", address=ray_cluster, retries=0)
    with pytest.raises(
        ExecutorError, match=r"symgate-ingest:\d: its worker process died 1 times .* nothing was written"
    ):
        kill_mid_run("symgate-ingest", lambda: ingest([fleet4], IngestConfig(), "symgate/lost-v0", executor=no_retries))
    assert not (datasets / "symgate" / "lost-v0").exists()
    assert not list(datasets.glob(".symgate-ingest-*"))  # no staging folder left behind


@pytest.mark.ray
def test_a_bad_bag_on_ray_is_the_same_error_as_locally(
    fleet4: Path, datasets: Path, tmp_path: Path, ray_executor: Executor
) -> None:
    fleet = tmp_path / "fleet"
    shutil.copytree(fleet4, fleet)
    (mcap,) = sorted(fleet.glob("*/*.mcap"))[2:3]
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    with pytest.raises(IngestError) as local:
        ingest([fleet], IngestConfig(), "symgate/bad-v0", workers=2)
    with pytest.raises(IngestError) as ray:
        ingest([fleet], IngestConfig(), "symgate/bad-v0", executor=ray_executor)
    assert str(ray.value) == str(local.value) and "cannot read bag" in str(ray.value)
    assert not (datasets / "symgate" / "bad-v0").exists()


@pytest.mark.ray
def test_cli_ingest_on_ray_without_an_address_starts_a_private_cluster(
    fleet4: Path, datasets: Path, ray_cluster: str
) -> None:
    _, local = ingest([fleet4], IngestConfig(), "symgate/local-v0", workers=2)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("symgate")),
            "ingest",
            str(fleet4),
            "--dataset-id",
            "symgate/cli-v0",
            "--executor",
            "ray",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ray = QualityReport.model_validate_json((datasets / "symgate" / "cli-v0" / "quality_report.json").read_text())
    assert_same_dataset("symgate/local-v0", "symgate/cli-v0", local, ray)
