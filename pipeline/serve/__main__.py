"""``python -m pipeline.serve COMMAND...``: run a command in the hermetic DDS environment (root only).

``make ros-test`` runs the ROS 2 tests this way; unlike ``symgate serve``, it refuses to run a
command that cannot be isolated instead of falling back to the host's network.
"""

import os
import sys

from pipeline.serve import isolated


def main() -> None:
    """Exec ``sys.argv[1:]`` inside the private network, mount and /dev/shm namespaces."""
    if len(sys.argv) < 2:
        sys.exit("usage: python -m pipeline.serve COMMAND [ARGS...]")
    command, env, is_isolated = isolated(sys.argv[1:])
    if not is_isolated:
        sys.exit("cannot isolate DDS here: needs root and the unshare, ip and mount commands (apt install iproute2)")
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
