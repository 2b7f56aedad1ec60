"""pipeline.serve.launch's helpers that need a real rclpy context."""

import threading
import time

import pytest
from rclpy.node import Node

from pipeline.serve.launch import spinning


def test_spinning_runs_callbacks_and_joins_its_thread_before_shutdown(ros: None) -> None:
    node = Node("test_spinning")
    ticks: list[float] = []
    node.create_timer(0.01, lambda: ticks.append(time.monotonic()))
    try:
        with spinning(node):
            deadline = time.monotonic() + 30.0
            while len(ticks) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert len(ticks) >= 5
        assert not [t for t in threading.enumerate() if t.name == "spin test_spinning"]
        count = len(ticks)
        time.sleep(0.1)
        assert len(ticks) == count  # nothing runs the node's callbacks any more
    finally:
        node.destroy_node()


def test_spinning_refuses_to_shut_down_under_a_callback_that_does_not_return(ros: None) -> None:
    node = Node("test_spinning_stuck")
    release = threading.Event()
    node.create_timer(0.01, lambda: release.wait(30.0))
    try:
        with pytest.raises(RuntimeError, match="did not stop within 0.5 s"), spinning(node, stop_timeout_s=0.5):
            time.sleep(0.1)
    finally:
        release.set()
        node.destroy_node()
