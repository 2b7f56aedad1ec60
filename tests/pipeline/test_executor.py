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
from pipeline.ingest import IngestConfig, QualityReport, find_bags, ingest
from pipeline.ingest.bag import IngestError
from pipeline.ingest.dataset import SHARD_DATASET_ID, merge_shards, uses_shards, write_shard
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


def test_fleets_above_the_threshold_use_shard_mode(fleet4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bags = find_bags([fleet4])
    size = sum(f.stat().st_size for bag in bags for f in bag.iterdir())
    assert not uses_shards(bags, None) and uses_shards(bags, True) and not uses_shards(bags, False)
    monkeypatch.setattr("pipeline.ingest.dataset.SHARD_ABOVE_BYTES", size - 1)
    assert uses_shards(bags, None)


def test_shard_mode_gives_the_driver_modes_dataset_locally(fleet4: Path, datasets: Path) -> None:
    _, driver = ingest([fleet4], IngestConfig(), "symgate/driver-v0", workers=2)
    _, sharded = ingest([fleet4], IngestConfig(), "symgate/shards-v0", workers=2, shards=True)
    assert_same_dataset("symgate/driver-v0", "symgate/shards-v0", driver, sharded)
    assert sorted(p.name for p in datasets.iterdir()) == ["symgate"]  # no shard or staging folder left


def test_cli_ingest_with_shards_says_so_and_gives_the_same_dataset(fleet4: Path, datasets: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    _, driver = ingest([fleet4], IngestConfig(), "symgate/driver-v0", workers=1)
    args = ["ingest", str(fleet4), "--dataset-id", "symgate/cli-shards-v0", "--workers", "1", "--shards"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "shard mode" in result.output
    sharded = QualityReport.model_validate_json(
        (datasets / "symgate" / "cli-shards-v0" / "quality_report.json").read_text()
    )
    assert_same_dataset("symgate/driver-v0", "symgate/cli-shards-v0", driver, sharded)


@pytest.fixture
def shards4(fleet4: Path, tmp_path: Path) -> list[Path]:
    """One shard per bag of ``fleet4``, in bag order."""
    return [write_shard(bag, IngestConfig(), tmp_path / "shards" / bag.name) for bag in find_bags([fleet4])]


def test_merged_shards_are_the_fleets_dataset(fleet4: Path, shards4: list[Path], datasets: Path) -> None:
    _, driver = ingest([fleet4], IngestConfig(), "symgate/driver-v0", workers=1)
    _, merged = merge_shards(shards4, IngestConfig(), "symgate/merged-v0")
    assert_same_dataset("symgate/driver-v0", "symgate/merged-v0", driver, merged)
    assert merged.dataset_id == "symgate/merged-v0"


def test_a_truncated_shard_is_a_clear_error_and_nothing_is_written(shards4: list[Path], datasets: Path) -> None:
    hdf5 = shards4[2] / SHARD_DATASET_ID / "data" / "main_data.hdf5"
    hdf5.write_bytes(hdf5.read_bytes()[: hdf5.stat().st_size // 2])
    with pytest.raises(IngestError, match=rf"{shards4[2]}: bad ingest shard: unreadable .*nothing written"):
        merge_shards(shards4, IngestConfig(), "symgate/merged-v0")
    assert not (datasets / "symgate" / "merged-v0").exists() and not list(datasets.glob(".symgate-ingest-*"))


def test_missing_foreign_and_repeated_shards_are_clear_errors(
    shards4: list[Path], datasets: Path, tmp_path: Path
) -> None:
    with pytest.raises(IngestError, match=rf"{tmp_path / 'none'}: bad ingest shard: no .*its task never finished"):
        merge_shards([*shards4, tmp_path / "none"], IngestConfig(), "symgate/merged-v0")
    with pytest.raises(IngestError, match=rf"{shards4[0]}: bad ingest shard: ingested with another ingest config"):
        merge_shards(
            shards4, IngestConfig.model_validate({"reward": {"kind": "reach", "radius": 0.06}}), "symgate/merged-v0"
        )
    with pytest.raises(IngestError, match=rf"{shards4[1]}: bad ingest shard: bag \S+ is also in {shards4[1]}"):
        merge_shards([shards4[1], shards4[1]], IngestConfig(), "symgate/merged-v0")
    report = shards4[3] / SHARD_DATASET_ID / "quality_report.json"
    lying = QualityReport.model_validate_json(report.read_text())
    lying.bags[0].episodes[0].kept = False
    report.write_text(lying.model_dump_json())
    with pytest.raises(IngestError, match=rf"{shards4[3]}: bad ingest shard: holds 2 episodes / \d+ steps, its report"):
        merge_shards(shards4, IngestConfig(), "symgate/merged-v0")
    assert not (datasets / "symgate" / "merged-v0").exists()


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


@pytest.mark.ray
def test_shard_mode_on_ray_gives_the_driver_modes_dataset(fleet4: Path, datasets: Path, ray_executor: Executor) -> None:
    _, local = ingest([fleet4], IngestConfig(), "symgate/local-v0", workers=2)
    _, ray = ingest([fleet4], IngestConfig(), "symgate/ray-shards-v0", executor=ray_executor, shards=True)
    assert_same_dataset("symgate/local-v0", "symgate/ray-shards-v0", local, ray)
    assert not list(datasets.glob(".symgate-ingest-*"))


@pytest.mark.ray
def test_shard_mode_on_ray_retries_a_killed_worker_and_gives_the_same_dataset(
    fleet4: Path, datasets: Path, ray_executor: Executor
) -> None:
    _, local = ingest([fleet4], IngestConfig(), "symgate/local-v0", workers=1)
    _, (_, ray) = kill_mid_run(
        "symgate-ingest-shard",
        lambda: ingest([fleet4], IngestConfig(), "symgate/killed-v0", executor=ray_executor, shards=True),
    )
    assert_same_dataset("symgate/local-v0", "symgate/killed-v0", local, ray)
    assert not list(datasets.glob(".symgate-ingest-*"))


@pytest.mark.ray
def test_shard_mode_without_retries_leaves_no_dataset_and_no_shard(
    fleet4: Path, datasets: Path, ray_cluster: str
) -> None:
    no_retries = Executor("ray", address=ray_cluster, retries=0)
    with pytest.raises(ExecutorError, match=r"symgate-ingest-shard:\d: its worker process died 1 times"):
        kill_mid_run(
            "symgate-ingest-shard",
            lambda: ingest([fleet4], IngestConfig(), "symgate/lost-v0", executor=no_retries, shards=True),
        )
    assert not (datasets / "symgate" / "lost-v0").exists()
    assert not list(datasets.rglob("*shard*")) and not list(datasets.glob(".symgate-ingest-*"))
