"""Stage 5, serve: the simulated robot over ROS 2 and the launcher of the sim-to-robot rehearsal.

The robot-side node itself is ``ros_nodes/`` (package ``symgate_ros``); the modules here need rclpy
and run in the ROS environment (``.venv-ros``). This file only says how to start a command there
and how to wait for something to happen in it, and imports nothing from ROS.
"""

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pipeline import REPO

#: The ROS environment (`make ros-venv`): rclpy's community wheels must not share the main venv.
ROS_PYTHON = Path(os.environ.get("SYMGATE_ROS_PYTHON", REPO / ".venv-ros" / "bin" / "python"))
#: A hermetic place for DDS: a private network namespace where only loopback exists (multicast routed
#: to it), so no packet leaves the machine and none arrives from another namespace, and a private mount
#: namespace with its own tmpfs on /dev/shm, so Fast DDS's shared-memory transport (which `unshare
#: --net` alone does not isolate) cannot link these processes to DDS participants outside.
NETNS = [
    "unshare",
    "--net",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    "mount -t tmpfs -o mode=1777,size=1g tmpfs /dev/shm && ip link set lo up && ip route add 224.0.0.0/4 dev lo "
    '&& exec "$0" "$@"',
]
#: Set in the isolated environment to the mount namespace it was started from (the tests check it differs).
OUTER_MOUNT_NAMESPACE = "SYMGATE_OUTER_MNTNS"


def isolated(command: list[str], domain_id: str = "42") -> tuple[list[str], dict[str, str], bool]:
    """``command``, run inside the private namespaces of :data:`NETNS` when this process may create them (root).

    Returns:
        The command line, its environment (DDS discovery limited to localhost, ``ROS_DOMAIN_ID``
        defaulting to ``domain_id``) and whether it is isolated.
    """
    can_isolate = os.geteuid() == 0 and all(shutil.which(tool) for tool in ("unshare", "ip", "mount"))
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env.setdefault("ROS_DOMAIN_ID", domain_id)
    env[OUTER_MOUNT_NAMESPACE] = str(Path("/proc/self/ns/mnt").readlink())
    return ([*NETNS, *command] if can_isolate else command), env, can_isolate


def in_ros_environment(args: list[str], domain_id: str = "42") -> tuple[list[str], dict[str, str], bool]:
    """``ROS_PYTHON *args``, isolated as :func:`isolated` does."""
    return isolated([str(ROS_PYTHON), *args], domain_id)


def wait_until(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    """Poll ``condition`` every ``poll_s`` until it holds (True) or ``timeout_s`` has passed (False).

    For what another thread or process does (an executor spinning a node, a DDS peer): a service's
    answer, a publisher appearing, a quiet topic.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return False
