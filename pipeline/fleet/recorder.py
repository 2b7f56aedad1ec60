"""A simulated robot fleet that logs ROS 2 bags exactly as real robots would.

Each robot runs its episodes in its own PyBullet process and writes one rosbag2 (MCAP or sqlite3)
with ``rosbags``: ``/joint_states`` from a driver sampling faster than the controller (with timing
jitter and transport latency), ``/goal`` on every goal change, ``/joint_commands`` with the torques
applied at the control rate, and JSON episode markers on ``/episode``. No rewards: real robots do
not log them, ingestion computes them.

The output folder appears atomically (built under a temporary name, renamed when every bag is
complete) and holds one bag per robot plus ``fleet.json``: the config, per-bag message counts and
file hashes, and the simulator's ground truth per episode (context, controller, success), which
tests and reports may use but ingestion must not.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, Field
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from pipeline import __version__
from pipeline.fleet.config import FleetConfig, TopicNames
from pipeline.io import atomic_directory, atomic_write_json, sha256_file
from sim.behaviour import BehaviourPolicy
from sim.robots.interface import PhysicsSample, SimulatedArm, behaviour_policies, simulated_arm

JOINT_STATE = "sensor_msgs/msg/JointState"
POINT_STAMPED = "geometry_msgs/msg/PointStamped"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
STRING = "std_msgs/msg/String"
MANIFEST = "fleet.json"
_STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_NS = 1_000_000_000


class EpisodeRecord(BaseModel):
    """Simulator ground truth for one logged episode."""

    index: int = Field(description="Episode index within the robot session.")
    controller: str = Field(description="Behaviour policy that drove the episode.")
    context_deg: float = Field(description="Context (goal bearing) in degrees.")
    reset_seed: int = Field(description="Seed the env was reset with (replaying the commands reproduces the run).")
    steps: int = Field(description="Control steps taken.")
    success: bool = Field(description="Whether the hand reached the goal.")
    start_ns: int = Field(description="Stamp of the episode start marker, ns.")
    end_ns: int = Field(description="Stamp of the episode end marker, ns.")


class RobotSession(BaseModel):
    """One robot's bag and what is in it."""

    robot: str = Field(description="Robot name, also the bag folder name.")
    storage: str = Field(description="rosbag2 storage plugin.")
    joint_order: list[str] = Field(description="Joint order of this robot's JointState messages.")
    start_ns: int = Field(description="First stamp in the bag, ns.")
    end_ns: int = Field(description="Last stamp in the bag, ns.")
    message_counts: dict[str, int] = Field(description="Messages per topic.")
    files: dict[str, str] = Field(description="sha256 of every file of the bag, by file name.")
    episodes: list[EpisodeRecord] = Field(description="Ground truth per episode.")


class FleetManifest(BaseModel):
    """Everything ``fleet.json`` records about a recorded fleet."""

    symgate_version: str
    config: FleetConfig
    sessions: list[RobotSession]


class _BagLog:
    """Collects one robot's messages, then writes them to a rosbag2 in log-time order."""

    def __init__(self, topics: TopicNames, joint_order: list[str], frame_id: str) -> None:
        self.typestore = get_typestore(Stores.ROS2_JAZZY)
        self.topics = topics
        self.joint_order = joint_order
        self.frame_id = frame_id
        self.messages: list[tuple[int, str, str, object]] = []  # (log_ns, topic, msgtype, message)

    def _header(self, stamp_ns: int) -> Any:
        types = self.typestore.types
        time = types["builtin_interfaces/msg/Time"](sec=stamp_ns // _NS, nanosec=stamp_ns % _NS)
        return types["std_msgs/msg/Header"](stamp=time, frame_id=self.frame_id)

    def joint_state(self, stamp_ns: int, log_ns: int, sample: PhysicsSample, order: NDArray[np.intp]) -> None:
        message = self.typestore.types[JOINT_STATE](
            header=self._header(stamp_ns),
            name=self.joint_order,
            position=sample.joint_position[order].astype(np.float64),
            velocity=sample.joint_velocity[order].astype(np.float64),
            effort=sample.joint_effort[order].astype(np.float64),
        )
        self.messages.append((log_ns, self.topics.joint_states, JOINT_STATE, message))

    def goal(self, stamp_ns: int, log_ns: int, position: NDArray[np.float64]) -> None:
        z = float(position[2]) if len(position) > 2 else 0.0  # the planar reacher's goal is (x, y)
        point = self.typestore.types["geometry_msgs/msg/Point"](x=float(position[0]), y=float(position[1]), z=z)
        message = self.typestore.types[POINT_STAMPED](header=self._header(stamp_ns), point=point)
        self.messages.append((log_ns, self.topics.goal, POINT_STAMPED, message))

    def command(self, log_ns: int, torque: NDArray[np.float64]) -> None:
        types = self.typestore.types
        dim = types["std_msgs/msg/MultiArrayDimension"](label="joints", size=len(torque), stride=len(torque))
        layout = types["std_msgs/msg/MultiArrayLayout"](dim=[dim], data_offset=0)
        message = types[FLOAT64_ARRAY](layout=layout, data=np.asarray(torque, dtype=np.float64))
        self.messages.append((log_ns, self.topics.joint_commands, FLOAT64_ARRAY, message))

    def event(self, log_ns: int, payload: dict[str, Any]) -> None:
        message = self.typestore.types[STRING](data=json.dumps(payload, sort_keys=True))
        self.messages.append((log_ns, self.topics.episode_events, STRING, message))

    def write(self, path: Path, storage: str) -> dict[str, int]:
        """Write all messages to a new bag at ``path``; returns the message count per topic."""
        counts: dict[str, int] = {}
        with Writer(path, version=9, storage_plugin=_STORAGE[storage]) as writer:
            connections = {}
            for topic, msgtype in (
                (self.topics.joint_states, JOINT_STATE),
                (self.topics.goal, POINT_STAMPED),
                (self.topics.joint_commands, FLOAT64_ARRAY),
                (self.topics.episode_events, STRING),
            ):
                connections[topic] = writer.add_connection(topic, msgtype, typestore=self.typestore)
            for log_ns, topic, msgtype, message in sorted(self.messages, key=lambda item: item[0]):
                writer.write(connections[topic], log_ns, self.typestore.serialize_cdr(message, msgtype))
                counts[topic] = counts.get(topic, 0) + 1
        return counts


class _JointStateDriver:
    """Samples the physics at the sensor rate: nominal ticks plus jitter, stamped with the physics time read."""

    def __init__(self, config: FleetConfig, rng: np.random.Generator, log: _BagLog, order: NDArray[np.intp]) -> None:
        self.period_ns = round(_NS / config.sensor.joint_state_hz)
        self.jitter_ns = config.sensor.sample_jitter_s * _NS
        self.latency_ns = tuple(round(x * _NS) for x in config.sensor.transport_latency_s)
        self.rng, self.log, self.order = rng, log, order
        self.nominal_ns = -1
        self.due_ns = -1
        self.last_stamp_ns = -1

    def latency(self) -> int:
        """A transport delay drawn for one message, ns."""
        low, high = self.latency_ns
        return int(self.rng.integers(low, high + 1))

    def offer(self, time_ns: int, sample: PhysicsSample) -> None:
        """The physics state at ``time_ns``; published if a sensor tick has fallen due."""
        if self.nominal_ns < 0:
            self.nominal_ns = self.due_ns = time_ns
        if time_ns < self.due_ns:
            return
        if time_ns > self.last_stamp_ns:
            self.log.joint_state(time_ns, time_ns + self.latency(), sample, self.order)
            self.last_stamp_ns = time_ns
        while self.due_ns <= time_ns:  # ticks that fell inside one physics step are dropped, as a driver would
            self.nominal_ns += self.period_ns
            self.due_ns = (
                self.nominal_ns + round(self.rng.normal(0.0, self.jitter_ns)) if self.jitter_ns else self.nominal_ns
            )


@dataclass(frozen=True)
class _SimulatedRobot:
    """The env a robot runs and the behaviour policy of each episode."""

    env: SimulatedArm
    policies: list[BehaviourPolicy]


def _make_robot(config: FleetConfig) -> _SimulatedRobot:
    env = simulated_arm(config.robot, config.discrete, **({} if config.robot is not None else {"config": config.env}))
    return _SimulatedRobot(env, behaviour_policies(env, config.recipe, config.episodes, config.behaviour))


def record_robot(
    config: FleetConfig, robot_index: int, bag_path: Path, on_episode: Callable[[], None] | None = None
) -> RobotSession:
    """Simulate one robot session and write its bag.

    Args:
        config: The fleet config.
        robot_index: Which robot (selects its child seed and start time).
        bag_path: Where the bag folder is created (must not exist).
        on_episode: Called after every finished episode (progress reporting).

    Returns:
        What was written, with the simulator's ground truth per episode.
    """
    rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(robot_index + 1)[robot_index])
    simulated = _make_robot(config)
    env = simulated.env
    try:
        names = list(env.joint_names)
        order = rng.permutation(len(names)) if config.shuffle_joint_order else np.arange(len(names))
        log = _BagLog(config.topics, [names[i] for i in order], config.frame_id)
        driver = _JointStateDriver(config, rng, log, order)
        physics_ns = _NS / env.physics_hz
        control_ns = round(_NS / env.control_hz)
        homing_steps = math.ceil(config.sensor.homing_s * env.physics_hz)
        contexts = env.reset_contexts
        clock_ns = round(config.start_time_s * _NS) + robot_index * 3600 * _NS
        episode_start_ns = 0

        def on_physics(sample: PhysicsSample) -> None:
            driver.offer(episode_start_ns + round(sample.physics_step * physics_ns), sample)

        env.add_physics_listener(on_physics)
        records = []
        for index, policy in enumerate(simulated.policies):
            context = float(rng.choice(contexts))
            reset_seed = int(rng.integers(2**31))
            observation, _ = env.reset(seed=reset_seed, options={"context": context})
            log.goal(clock_ns, clock_ns + driver.latency(), env.goal_position)
            start = env.joint_state()
            for step in range(homing_steps):  # the homed arm waits at rest; the driver keeps publishing
                driver.offer(clock_ns + round(step * physics_ns), start)
            episode_start_ns = clock_ns + round(homing_steps * physics_ns)
            log.event(episode_start_ns, {"event": "start", "episode": index, "controller": policy.name})
            steps, done, terminated = 0, False, False
            while not done:
                observation, _, terminated, truncated, info = env.step(policy(observation, rng))
                log.command(episode_start_ns + steps * control_ns + driver.latency(), info["applied_command"])
                steps += 1
                done = terminated or truncated
            end_ns = episode_start_ns + steps * control_ns
            reason = "success" if terminated else "time_limit"
            log.event(end_ns + driver.latency(), {"event": "end", "episode": index, "reason": reason})
            records.append(
                EpisodeRecord(
                    index=index,
                    controller=policy.name,
                    context_deg=math.degrees(context),
                    reset_seed=reset_seed,
                    steps=steps,
                    success=terminated,
                    start_ns=episode_start_ns,
                    end_ns=end_ns,
                )
            )
            clock_ns = end_ns + control_ns
            if on_episode is not None:
                on_episode()
    finally:
        env.close()
    counts = log.write(bag_path, config.storage)
    stamps = [message[0] for message in log.messages]
    return RobotSession(
        robot=bag_path.name,
        storage=config.storage,
        joint_order=log.joint_order,
        start_ns=min(stamps),
        end_ns=max(stamps),
        message_counts=counts,
        files={f.name: sha256_file(f) for f in sorted(bag_path.iterdir())},
        episodes=records,
    )


_worker_progress: Any = None


def _init_worker(progress: Any) -> None:
    """Process-pool initializer: keep the progress queue this worker reports episodes to."""
    global _worker_progress
    _worker_progress = progress


def _record_robot_in_worker(config_json: str, robot_index: int, bag_path: str) -> str:
    """Process-pool entry point: plain JSON in and out."""
    session = record_robot(
        FleetConfig.model_validate_json(config_json), robot_index, Path(bag_path), lambda: _worker_progress.put(1)
    )
    return session.model_dump_json()


def robot_name(index: int) -> str:
    """Bag folder name of robot ``index``."""
    return f"robot_{index:03d}"


def record_fleet(
    config: FleetConfig,
    out: Path,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    on_episode: Callable[[], None] | None = None,
) -> FleetManifest:
    """Simulate a fleet and write one bag per robot plus ``fleet.json`` into ``out``, atomically.

    The result does not depend on ``workers``: robot i always uses the i-th child seed.

    Args:
        config: The fleet config.
        out: Output folder; must not exist unless ``overwrite``.
        workers: Parallel processes (default: one per robot, at most the CPU count); 1 runs inline.
        overwrite: Replace an existing ``out``.
        on_episode: Called once per finished episode, in this process.

    Returns:
        The manifest that was written.
    """
    workers = workers or min(config.robots, os.cpu_count() or 1)
    with atomic_directory(out, overwrite=overwrite) as staging:
        if workers == 1:
            sessions = [record_robot(config, i, staging / robot_name(i), on_episode) for i in range(config.robots)]
        else:
            sessions = _record_in_processes(config, staging, workers, on_episode)
        manifest = FleetManifest(symgate_version=__version__, config=config, sessions=sessions)
        atomic_write_json(staging / MANIFEST, manifest.model_dump(mode="json"))
    return manifest


def _record_in_processes(
    config: FleetConfig, staging: Path, workers: int, on_episode: Callable[[], None] | None
) -> list[RobotSession]:
    context = multiprocessing.get_context("spawn")
    progress = context.Queue()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(progress,)) as pool:
        futures = [
            pool.submit(_record_robot_in_worker, config.model_dump_json(), i, str(staging / robot_name(i)))
            for i in range(config.robots)
        ]
        pending: set[Future[str]] = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress, on_episode)
        _drain(progress, on_episode)
        return [RobotSession.model_validate_json(future.result()) for future in futures]


def _drain(progress: Any, on_episode: Callable[[], None] | None) -> None:
    while True:
        try:
            progress.get_nowait()
        except Empty:
            return
        if on_episode is not None:
            on_episode()
