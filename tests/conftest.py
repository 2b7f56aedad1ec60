"""Shared fixtures: small real fleets recorded once per test session."""

import importlib.util
from pathlib import Path

import pytest

from pipeline.fleet import FleetConfig, FleetManifest, record_fleet

# The ROS tests need rclpy, which lives in .venv-ros: `make test` runs them there, inside a network
# namespace (`make ros-test`). A venv without rclpy does not collect them.
collect_ignore = [] if importlib.util.find_spec("rclpy") else ["ros_nodes"]


def small_fleet_config(**overrides: object) -> FleetConfig:
    """Two robots, three mixed episodes each: every code path, a second of CPU."""
    return FleetConfig.model_validate({"robots": 2, "episodes": 3, **overrides})


@pytest.fixture(scope="session", params=["mcap", "sqlite3"])
def recorded_fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, FleetManifest]:
    out = tmp_path_factory.mktemp(f"fleet-{request.param}") / "fleet"
    manifest = record_fleet(small_fleet_config(storage=request.param), out, workers=1)
    return out, manifest
