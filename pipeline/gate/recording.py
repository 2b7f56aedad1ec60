"""``symgate gate --record``: the replayed episodes as one MCAP file that Foxglove (or any MCAP reader) opens.

The episodes lie one after another on one timeline (a second apart), stamped at their control
steps: ``/joint_states`` (raw joint state after each step) with the ``/tf`` tree it implies,
``/tf_static`` and ``/robot_description`` once, ``/goal``, the policy's commands on
``/joint_commands`` (clipped, joint order; a discrete action as its torques) and a
``/gate/episode`` marker at each episode's start and end naming the suite, the context, the
episode's seed, its outcome, the verdict and the certificate id (null for a failed model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.gate.replay import EpisodeTrace
from pipeline.record import RobotBag

RECORDING_FILE = "gate_episodes.mcap"
JOINT_STATES, GOAL, COMMANDS, EPISODE = "/joint_states", "/goal", "/joint_commands", "/gate/episode"
_NS = 1_000_000_000


def write_recording(
    traces: Sequence[EpisodeTrace], path: Path, start_ns: int, verdict: str, certificate_id: str | None,
    onnx_sha256: str | None,
) -> dict[str, int]:  # fmt: skip
    """Write the traces to ``path`` (MCAP), the first episode starting at ``start_ns``; returns messages per topic."""
    first = traces[0].arm
    assert first is not None, "replay the episodes first"
    bag = RobotBag(first.urdf_path, first.held_joints, first.base_link)
    bag.robot_description(start_ns)
    t0 = start_ns
    for trace in traces:
        arm, record = trace.arm, trace.evaluated
        assert arm is not None
        marker: dict[str, Any] = {
            "suite": record.suite,
            "context_index": record.context_index,
            "context_deg": math.degrees(record.context_rad),
            "episode": record.episode,
            "seed": record.seed,
            "chosen_as": list(trace.choice.why),
            "success": record.success,
            "steps": record.steps,
            "reproduced": trace.reproduced,
            "verdict": verdict,
            "certificate_id": certificate_id,
            "onnx_sha256": onnx_sha256,
        }
        bag.marker(t0, EPISODE, {"event": "start", **marker})
        for step, (position, velocity) in enumerate(zip(trace.joint_position, trace.joint_velocity, strict=True)):
            stamp = t0 + round(step * _NS / trace.control_hz)
            bag.joint_state(stamp, JOINT_STATES, arm.joint_names, position, velocity)
            bag.goal(stamp, GOAL, arm.goal)
            if step < len(trace.command):
                bag.command(stamp, COMMANDS, trace.command[step])  # the command the policy sent on this state
        t_end = t0 + round((len(trace.joint_position) - 1) * _NS / trace.control_hz)
        bag.marker(t_end, EPISODE, {"event": "end", **marker})
        t0 = t_end + _NS
    return bag.write(path)
