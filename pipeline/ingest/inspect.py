"""``symgate ingest inspect``: what a bag nobody has described holds, and a draft mapping for it.

For each bag: every topic's type, message count, rate, largest gap and whether its type can be
decoded; for ``JointState`` topics the joint-name lists and array lengths seen; for every topic
with a header the offset of ``header.stamp`` from log time (which clock the robot stamped with).
Then a draft ingest mapping (YAML, every field commented) for the user to edit: the busiest
``JointState`` topic as the state, a command topic as the action, a ``String`` topic as episode
markers, a ``PointStamped`` as the goal, each time base chosen from the offsets seen. Given the
robot profile (``--robot``), the draft takes the rate, the joints, the action field and its unit,
the 3-D goal and the reach rule from it: a bag whose joints are named as in the URDF then needs
no edit, a log without a goal gets a hindsight goal, one without markers one episode per file,
and ``Twist`` commands the damped least-squares conversion to joint velocities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader

from pipeline.ingest.bag import IngestError
from pipeline.ingest.config import TWIST_COMPONENTS, TWIST_TYPES, twist_prefix
from pipeline.ingest.decode import Decoder
from sim.robots.profile import Robot

JOINT_STATE = "sensor_msgs/msg/JointState"
MULTI_ARRAY = "std_msgs/msg/Float64MultiArray"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
# The command types ingest reads, in order of preference.
COMMAND_TYPES = (MULTI_ARRAY, TRAJECTORY, *TWIST_TYPES, JOINT_STATE)
UNITS = {"effort": "N·m", "velocity": "rad/s", "position": "rad"}  # of each action interface
DECODED_PER_TOPIC = 2000  # messages decoded per topic for names and header offsets (all are counted)
SKEW_S = 1.0  # header offsets beyond this: the header is on another clock (the default max_clock_skew_s)


@dataclass
class TopicSummary:
    """One topic of one bag."""

    topic: str
    msgtype: str
    messages: int
    rate_hz: float
    largest_gap_s: float
    decodable: bool
    joint_names: list[list[str]] = field(default_factory=list)  # distinct name lists (JointState)
    array_lengths: dict[str, list[int]] = field(default_factory=dict)  # distinct lengths per array (JointState)
    header_offset_s: tuple[float, float, float] | None = None  # log − header: min, median, max


@dataclass
class BagSummary:
    """One bag."""

    bag: str
    duration_s: float
    topics: list[TopicSummary]


def _rate_and_gap(times: list[int]) -> tuple[float, float]:
    if len(times) < 2:
        return 0.0, 0.0
    periods = np.diff(np.sort(np.array(times, dtype=np.int64))) / 1e9
    median = float(np.median(periods))
    return (1.0 / median if median > 0 else 0.0), float(periods.max())


def inspect_bag(path: Path) -> BagSummary:
    """Summarise one bag (rosbag2 folder or bare ``.mcap``).

    Raises:
        IngestError: The bag cannot be read.
    """
    try:
        with Reader(path) as reader:
            decoder = Decoder(reader.connections)
            log_times: dict[str, list[int]] = {}
            offsets: dict[str, list[int]] = {}
            names: dict[str, dict[tuple[str, ...], None]] = {}
            lengths: dict[str, dict[str, set[int]]] = {}
            types = {c.topic: c.msgtype for c in reader.connections}
            for connection, log_ns, raw in reader.messages():
                topic = connection.topic
                seen = log_times.setdefault(topic, [])
                seen.append(log_ns)
                if len(seen) > DECODED_PER_TOPIC or not decoder.known(connection.msgtype):
                    continue
                try:
                    message: Any = decoder.decode(raw, connection.msgtype)[0]
                except ValueError:
                    continue
                stamp = getattr(getattr(message, "header", None), "stamp", None)
                if stamp is not None:
                    header_ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
                    offsets.setdefault(topic, []).append(log_ns - header_ns)
                if connection.msgtype == JOINT_STATE:
                    names.setdefault(topic, {})[tuple(message.name)] = None
                arrays = {JOINT_STATE: ("position", "velocity", "effort"), MULTI_ARRAY: ("data",)}
                for array in arrays.get(connection.msgtype, ()):
                    lengths.setdefault(topic, {}).setdefault(array, set()).add(len(getattr(message, array)))
            duration = (reader.end_time - reader.start_time) / 1e9 if reader.message_count else 0.0
    except Exception as error:  # unreadable storage
        raise IngestError(path, f"cannot read bag: {type(error).__name__}: {error}") from error
    topics = []
    for topic, msgtype in sorted(types.items()):
        times = log_times.get(topic, [])
        rate, gap = _rate_and_gap(times)
        offset = np.array(offsets.get(topic, []), dtype=np.float64) / 1e9
        topics.append(
            TopicSummary(
                topic=topic,
                msgtype=msgtype,
                messages=len(times),
                rate_hz=rate,
                largest_gap_s=gap,
                decodable=decoder.known(msgtype),
                joint_names=[list(n) for n in names.get(topic, {})],
                array_lengths={k: sorted(v) for k, v in lengths.get(topic, {}).items()},
                header_offset_s=(float(offset.min()), float(np.median(offset)), float(offset.max()))
                if len(offset)
                else None,
            )
        )
    return BagSummary(bag=path.name, duration_s=duration, topics=topics)


def _time_base(topic: TopicSummary) -> tuple[str, str]:
    """The time base to draft for a topic, and why."""
    if topic.header_offset_s is None:
        return "log", "no header: the bag's log time"
    low, median, high = topic.header_offset_s
    if abs(median) > SKEW_S:
        return "header_shifted", f"header.stamp is {median:+.3f} s from log time: another clock (sim time?)"
    return "header", f"header.stamp, logged {low * 1e3:.1f}–{high * 1e3:.1f} ms after it"


def _pick(topics: list[TopicSummary], msgtypes: tuple[str, ...], exclude: str | None = None) -> TopicSummary | None:
    found = [t for t in topics if t.msgtype in msgtypes and t.topic != exclude and t.decodable]
    return max(found, key=lambda t: t.messages) if found else None


def _joints(topic: TopicSummary) -> list[str]:
    ordered: dict[str, None] = {}
    for names in topic.joint_names:
        ordered.update(dict.fromkeys(names))
    return list(ordered)


def _entry(text: str, comment: str = "") -> str:
    """One YAML line with its comment aligned at column 40."""
    return f"{text:<39} # {comment}" if comment else text


def draft_mapping(summaries: list[BagSummary], robot: Robot | None = None, robot_name: str | None = None) -> str:
    """A draft ingest mapping (YAML text, every field commented) for bags like these.

    Args:
        summaries: The inspected bags.
        robot: The robot profile the bags come from, if known: its rate, joints, action interface and task.
        robot_name: How the draft names that profile (its name or path, as given to ``--robot``).
    """
    merged = list({t.topic: t for summary in summaries for t in summary.topics}.values())
    state = _pick(merged, (JOINT_STATE,))
    candidates = (_pick(merged, (kind,), exclude=state.topic if state else None) for kind in COMMAND_TYPES)
    command = next((found for found in candidates if found is not None), None)
    markers = _pick(merged, ("std_msgs/msg/String",))
    goal = _pick(merged, ("geometry_msgs/msg/PointStamped",))
    profile = robot.profile if robot is not None else None
    e = _entry
    lines = [
        "# Draft ingest mapping written by `symgate ingest inspect` from: " + ", ".join(s.bag for s in summaries),
        "# Edit every TODO, then: symgate ingest BAGS --config THIS_FILE --dataset-id namespace/name-v0",
        "# Field names and joints must produce the env's observation and action names",
        "# (deploy/ingest/reacher.yaml documents every field).",
        "",
    ]
    if profile is None:
        lines.append(e("control_hz: 50.0", "dataset step k = control tick k; must equal env.control_hz"))
    else:
        lines += [
            e(f"robot: {robot_name or profile.name}", "the robot profile: env, joints, kinematics, limits"),
            e("env_id: symgate/ArmReach-v0", "the env of every robot profile"),
            e(f"control_hz: {float(profile.control_hz)}", "the profile's control rate"),
        ]
    lines += [
        e("max_clock_skew_s: 1.0", "header.stamp this far from its usual log offset = clock jump"),
        "",
        e("observations:", "in observation-vector order"),
    ]
    if state is None:
        lines.append(e("  {}", "TODO: no decodable sensor_msgs/msg/JointState topic found"))
    else:
        lines += _state_fields(state, robot)
    if goal is not None:
        base, why = _time_base(goal)
        components = "[point.x, point.y]" if profile is None else "[point.x, point.y, point.z]"
        lines += [
            e("  goal_position:", "the goal the reward rule and segmentation use"),
            e(f"    topic: {goal.topic}", f"{goal.messages} messages"),
            e("    msgtype: geometry_msgs/msg/PointStamped", "any other type on the topic is an error"),
            e(f"    components: {components}", "scalar attribute paths, in the base frame"),
            e(f"    time_base: {base}", why),
            e("    resample: zero_order_hold", "the latest goal at or before the tick"),
            e("    latched: true", "published on change: held, never stale"),
            e("    unit: m", "recorded in the dataset metadata"),
        ]
    elif profile is not None:
        lines.append(e("hindsight_goal: {}", "no goal topic: each episode's goal is its final end-effector position"))
    lines.append(e("action:", "exactly one field"))
    if command is None:
        lines.append(e("  {}", "TODO: no command topic (Float64MultiArray, JointTrajectory, Twist, JointState) found"))
    else:
        lines += _action_field(command, robot)
    segment_by = "markers" if markers is not None or goal is not None or profile is None else "file"
    why_segment = "start/end markers" if markers else "goal changes" if segment_by == "markers" else "no markers"
    lines += [
        e("episodes:", "how the log is cut into episodes"),
        e(f"  segment_by: {segment_by}", f"{why_segment}; markers | file (one per bag) | gaps | idle"),
        e(
            f"  marker_topic: {markers.topic if markers else 'null'}",
            "String JSON {event: start|end}; null: fall-backs",
        ),
        e("  goal_field: goal_position", "without markers, a change of this field starts an episode"),
        e("  max_gap_s: 0.1", "a required topic silent this long truncates the episode"),
        e(
            f"  time_limit_steps: {200 if profile is None else profile.task.max_episode_steps}",
            "episodes are truncated after this many steps",
        ),
        e("  estop_topic: null", "optional std_msgs/msg/Bool e-stop topic"),
    ]
    if profile is not None:
        lines += [
            e("reward:", "reach: reward 1 and termination within radius of the goal; {kind: none} for BC"),
            e("  kind: reach", "forward kinematics of the profile's end effector"),
            e(f"  radius: {profile.task.success_radius}", "the profile's success radius, m"),
        ]
    return "\n".join(lines) + "\n"


def _state_fields(state: TopicSummary, robot: Robot | None) -> list[str]:
    """The draft's joint_position and joint_velocity fields, read from the JointState topic ``state``."""
    e = _entry
    logged = _joints(state)
    base, why = _time_base(state)
    empty = [] in state.joint_names
    if robot is None:
        joints, note, wrap = logged, "TODO keep the joints the env observes, in its order", []
    else:
        missing = [j for j in robot.joint_names if j not in logged]
        joints = list(robot.joint_names)
        note = "the profile's joints" if not missing and not empty else f"TODO not logged by name: {missing}"
        wrap = [limit.name for limit in robot.limits if limit.continuous]
    lines: list[str] = []
    for name, array, resample, unit in (
        ("joint_position", "position", "linear", "rad"),
        ("joint_velocity", "velocity", "causal_linear", "rad/s"),
    ):
        lines += [
            e(f"  {name}:", "a named field: components are its joints"),
            e(
                f"    topic: {state.topic}",
                f"{state.messages} messages, {state.rate_hz:.1f} Hz, largest gap {state.largest_gap_s:.3f} s",
            ),
            e(f"    msgtype: {JOINT_STATE}", "any other type on the topic is an error"),
            e(f"    path: {array}", f"array lengths seen: {state.array_lengths.get(array, [])}"),
            e(f"    joints: [{', '.join(joints)}]", note),
            e("    names_path: name", "joints are picked by name from this array"),
            e(
                f"    joint_order: {'[TODO]' if empty else 'null'}",
                "entries' names when a message's name array is empty" + (" (some are!)" if empty else ""),
            ),
            e(f"    time_base: {base}", why),
            e(f"    resample: {resample}", "linear | causal_linear | zero_order_hold | last_value"),
            e(f"    unit: {unit}", "recorded in the dataset metadata"),
        ]
        if wrap and name == "joint_position":
            lines.append(e(f"    wrap_joints: [{', '.join(wrap)}]", "continuous joints, wrapped to [-π, π)"))
    return lines


def _action_field(command: TopicSummary, robot: Robot | None) -> list[str]:
    """The draft's action field, read from the command topic ``command``."""
    e = _entry
    base, why = _time_base(command)
    interface = robot.profile.action.interface if robot is not None else None
    name = robot.profile.action_field if robot is not None else "joint_effort"
    joints = ", ".join(robot.joint_names) if robot is not None else None
    unit = UNITS[interface] if interface is not None else "TODO"
    lines = [
        e(f"  {name}:", "the profile's action field" if robot is not None else "TODO name it as the env's action"),
        e(f"    topic: {command.topic}", f"{command.messages} messages, {command.rate_hz:.1f} Hz"),
        e(f"    msgtype: {command.msgtype}", "any other type on the topic is an error"),
    ]
    if command.msgtype == TRAJECTORY:
        array = {"effort": "effort", "velocity": "velocities", "position": "positions"}.get(interface or "", "effort")
        return [
            *lines,
            e(f"    path: {array}", "the point array: positions, velocities or effort" + ("" if robot else " (TODO)")),
            e(f"    joints: [{joints or 'TODO'}]", "the joints commanded, picked by name from joint_names"),
            e("    names_path: joint_names", "the trajectory's joint names"),
            e(f"    time_base: {base}", why),
            e("    resample: zero_order_hold", "the point active at each tick"),
            e(f"    unit: {unit}", "e.g. N·m; recorded in the dataset metadata"),
        ]
    if command.msgtype in TWIST_TYPES:
        lines += [
            e(
                f"    components: [{', '.join(twist_prefix(command.msgtype) + c for c in TWIST_COMPONENTS[:3])}]",
                "add angular.* too if the operator commands them",
            ),
            e(f"    time_base: {base}", why),
            e("    resample: last_value", "the latest command in each control period"),
            e(f"    unit: {'m/s' if robot is not None else 'TODO'}", "the twist's; the dataset records rad/s"),
        ]
        if robot is None:
            return [*lines, e("# TODO", "a Twist needs --robot: it becomes the profile's joint velocities")]
        return [*lines, e("twist: {damping: 0.01}", "end-effector twist → joint velocity, damped least squares")]
    if (
        command.msgtype == JOINT_STATE
    ):  # a leader arm: its array of the profile's interface (effort, velocity, position)
        lines += [
            e(
                f"    path: {interface or 'effort'}",
                "the leader's array" + ("" if robot else ": TODO position for positions"),
            ),
            e(f"    joints: [{joints or ', '.join(_joints(command))}]", "the joints commanded, in dataset order"),
            e("    names_path: name", "joints are picked by name from this array"),
        ]
    else:
        width = max(command.array_lengths.get("data", [0]))
        fits = robot is not None and width == len(robot.joint_names)
        entries = joints if fits else ", ".join(f"TODO_{i + 1}" for i in range(width))
        lines += [
            e("    path: data", f"array lengths seen: {command.array_lengths.get('data', [])}"),
            e(
                f"    joints: [{entries}]",
                "the joint each entry commands" + ("" if fits else ", TODO in dataset order"),
            ),
            e("    names_path: null", "no names: the entries are joint_order (default: joints) in order"),
        ]
    return [
        *lines,
        e(f"    time_base: {base}", why),
        e("    resample: last_value", "the latest command in each control period"),
        e(f"    unit: {unit}", "e.g. N·m; recorded in the dataset metadata"),
    ]
