"""Faults injected for real: SIGKILL of the Ray worker process that runs a task."""

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _ray_worker(task_prefix: str) -> int | None:
    """The pid of a Ray worker process now running a task whose name starts with ``task_prefix``."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(f"ray::{task_prefix}".encode()):
                return int(cmdline.parent.name)
        except OSError:
            continue
    return None


def kill_mid_run(task_prefix: str, run: Callable[[], Any], timeout: float = 120.0) -> tuple[int, Any]:
    """Run ``run()`` in a thread; SIGKILL the first Ray worker seen running one of its tasks; return (pid, result)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = run()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    killed, deadline = None, time.monotonic() + timeout
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        killed = _ray_worker(task_prefix)
        if killed is not None:
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.005)
    thread.join(timeout)
    assert killed is not None, f"no Ray task {task_prefix}* was seen running"
    if "error" in outcome:
        raise outcome["error"]
    return killed, outcome["result"]
