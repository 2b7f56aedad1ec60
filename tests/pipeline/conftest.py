"""A small real dataset (simulated fleet → bags → Minari), built once per test session; a real Ray cluster."""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.fleet import FleetConfig, record_fleet
from pipeline.ingest import IngestConfig, ingest
from sim import DISCRETE_ENV_ID
from sim.robot import DEFAULT_URDF


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


#: The reacher env on another arm: links 0.45 / 0.35 m (ours: 0.5 / 0.5), elbow within ±1.5 rad (ours: ±2.6).
SHORT_ARM_LINKS = (0.45, 0.35)
SHORT_ARM_ELBOW_LIMIT = 1.5


@pytest.fixture(scope="session")
def short_arm_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A dataset recorded in the reacher env on the short arm's URDF: ``(MINARI_DATASETS_PATH, id)``."""
    root = tmp_path_factory.mktemp("short-arm")
    offset = '<origin xyz="0.5 0 0" rpy="0 0 0"/>'  # the elbow joint's, then the hand joint's
    first, second = SHORT_ARM_LINKS
    urdf = DEFAULT_URDF.read_text().replace(offset, offset.replace("0.5", str(first)), 1)
    urdf = urdf.replace(offset, offset.replace("0.5", str(second)), 1)
    limit = SHORT_ARM_ELBOW_LIMIT
    urdf = urdf.replace('lower="-2.6" upper="2.6"', f'lower="{-limit}" upper="{limit}"')
    (root / "short.urdf").write_text(urdf)
    env = {"urdf": str(root / "short.urdf")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root / "datasets"))
        record_fleet(FleetConfig.model_validate({"robots": 1, "episodes": 2, "env": env}), root / "fleet", workers=1)
        ingest([root / "fleet"], IngestConfig.model_validate({"env": env}), "symgate/short-arm-v0", workers=1)
    return root / "datasets", "symgate/short-arm-v0"


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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real single-node Ray cluster, 2 CPUs, token authentication on; yields its address.

    Ray binds its servers to every interface and replaces a loopback ``--node-ip-address`` with the
    routable one, so the tests run in a network namespace where loopback is the only interface
    (``make ray-test``): no port is reachable from outside it. The cluster is stopped afterwards by
    signalling the processes of its own session.
    """
    interfaces = sorted(name for _, name in socket.if_nameindex())  # of this network namespace
    if interfaces != ["lo"]:
        pytest.fail(f"Ray tests run in a loopback-only network namespace (make ray-test); here: {interfaces}")
    root = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--object-store-memory",
            str(200 << 20),
            "--temp-dir",
            str(root / "t"),
            "--disable-usage-stats",
        ],
        env={**os.environ, **auth},
        stdout=(root / "head.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in auth.items():
            patch.setenv(name, value)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            import ray as ray_module

            ray_module.shutdown()
            _stop_session(head)
            shutil.rmtree(root, ignore_errors=True)


def _stop_session(head: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, every process of the head's session (workers start their own process groups)."""

    def members() -> list[int]:
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == head.pid and fields[0] != "Z":  # in the head's session, not yet a zombie
                pids.append(int(stat.parent.name))
        return pids

    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        for pid in members():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while members() and time.monotonic() < deadline:
            time.sleep(0.2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(5)
