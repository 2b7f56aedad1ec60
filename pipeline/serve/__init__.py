"""Stage 5, serve: the simulated robot over ROS 2 and the launcher of the sim-to-robot rehearsal.

The robot-side node itself is ``ros_nodes/`` (package ``symgate_ros``); the modules here need rclpy
and run in the ROS environment (``.venv-ros``). This file only says how to start a command there,
and imports nothing from ROS.
"""

import os
import shutil
from pathlib import Path

from pipeline import REPO

#: The ROS environment (`make ros-venv`): rclpy's community wheels must not share the main venv.
ROS_PYTHON = Path(os.environ.get("SYMGATE_ROS_PYTHON", REPO / ".venv-ros" / "bin" / "python"))
#: A private network namespace where only loopback exists (with multicast routed to it) for DDS.
NETNS = ["unshare", "--net", "sh", "-c", 'ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec "$0" "$@"']


def in_ros_environment(args: list[str], domain_id: str = "42") -> tuple[list[str], dict[str, str], bool]:
    """``ROS_PYTHON *args``, run inside a private network namespace when this process may create one (root).

    Returns:
        The command line, its environment (DDS discovery limited to localhost) and whether it is isolated.
    """
    isolated = os.geteuid() == 0 and all(shutil.which(tool) for tool in ("unshare", "ip"))
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env.setdefault("ROS_DOMAIN_ID", domain_id)
    command = [str(ROS_PYTHON), *args]
    return ([*NETNS, *command] if isolated else command), env, isolated
