"""PyBullet, imported and connected without the banners its C code prints.

``import pybullet`` prints its build time (to stderr) and every ``connect`` prints ``argv[0]=``
(to stdout), straight to the file descriptors, which garbles progress bars and machine-readable
output. Everything in symgate gets PyBullet from here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def _c_output_silenced() -> Iterator[None]:
    """Point file descriptors 1 and 2 at /dev/null (Python exceptions still propagate afterwards)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


with _c_output_silenced():
    import pybullet
    from pybullet_utils import bullet_client


def connect_direct() -> Any:
    """A headless (``p.DIRECT``) physics client of its own, as a ``BulletClient``."""
    with _c_output_silenced():
        return bullet_client.BulletClient(connection_mode=pybullet.DIRECT)


__all__ = ["connect_direct", "pybullet"]
