"""Stage 0, the data source: a simulated robot fleet that logs ROS 2 bags."""

from pipeline.fleet.config import FleetConfig, SensorTiming, TopicNames
from pipeline.fleet.recorder import MANIFEST, FleetManifest, RobotSession, record_fleet, record_robot

__all__ = [
    "MANIFEST",
    "FleetConfig",
    "FleetManifest",
    "RobotSession",
    "SensorTiming",
    "TopicNames",
    "record_fleet",
    "record_robot",
]
