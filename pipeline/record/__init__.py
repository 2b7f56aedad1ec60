"""Episode recordings for the tools robotics engineers use: MCAP files of ROS 2 messages (Foxglove, ros2 bag)."""

from pipeline.record.bag import RobotBag
from pipeline.record.tf import Transform, urdf_transforms

__all__ = ["RobotBag", "Transform", "urdf_transforms"]
