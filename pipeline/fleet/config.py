"""Configuration of the simulated fleet (pydantic; ``deploy/fleet/reacher.yaml`` documents it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.behaviour import BehaviourConfig, RecipeName
from sim.config import FloatRange, ReacherConfig
from sim.contexts import ContextSets
from sim.robots.profile import load_profile

StorageName = Literal["mcap", "sqlite3"]


class TopicNames(BaseModel):
    """ROS 2 topics the robots log to (names as on the real robot)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    joint_states: str = Field("/joint_states", description="sensor_msgs/msg/JointState at the sensor rate.")
    goal: str = Field("/goal", description="geometry_msgs/msg/PointStamped in the base frame, on every goal change.")
    joint_commands: str = Field(
        "/joint_commands", description="std_msgs/msg/Float64MultiArray of applied torques at the control rate."
    )
    episode_events: str = Field(
        "/episode", description="std_msgs/msg/String JSON markers: start (controller) and end (reason)."
    )


class SensorTiming(BaseModel):
    """How the robots' drivers sample and timestamp, including their imperfections."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    joint_state_hz: float = Field(
        200.0, gt=0.0, description="Nominal /joint_states rate in Hz (above the control rate)."
    )
    sample_jitter_s: float = Field(
        0.0005,
        ge=0.0,
        description="Std of each sample's deviation from its nominal tick, in s (on top of physics steps).",
    )
    transport_latency_s: FloatRange = Field(
        (0.0005, 0.003), description="Range of the delay from header.stamp to the bag's log time, in s."
    )
    homing_s: float = Field(
        0.5, ge=0.0, description="Pause at the start pose before each episode, in s (joint states keep flowing)."
    )


def paper_env() -> ReacherConfig:
    """The paper's data setting: every episode in context 0."""
    return ReacherConfig(contexts=ContextSets(train_deg=(0.0,)))


class FleetConfig(BaseModel):
    """A simulated fleet: N robots, each logging one ROS 2 bag of M episodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    robots: int = Field(4, ge=1, description="Number of robots; each writes one bag.")
    episodes: int = Field(10, ge=1, description="Episodes per robot session.")
    recipe: RecipeName = Field("mixed", description="Behaviour recipe: expert, suboptimal, mixed or asymmetric.")
    discrete: bool = Field(False, description="Use the paper's 9 discrete torque pairs instead of continuous torques.")
    storage: StorageName = Field("mcap", description="rosbag2 storage plugin: mcap or sqlite3.")
    seed: int = Field(0, ge=0, description="Fleet seed; robot i uses the i-th child seed, whatever the worker count.")
    shuffle_joint_order: bool = Field(
        True, description="Each robot's driver lists joints in its own order (consumers must map by name)."
    )
    frame_id: str = Field("base_link", description="frame_id of stamped messages (the robot's base frame).")
    start_time_s: float = Field(
        1_767_225_600.0, ge=0.0, description="Wall-clock start of robot 0's session, Unix time in s."
    )
    robot: str | None = Field(
        None,
        description="Robot profile (a name under deploy/robots/ or a robot.yaml path); null: the reacher env below.",
    )
    env: ReacherConfig = Field(
        default_factory=paper_env, description="The simulated robot and task; contexts drawn from its train set."
    )
    behaviour: BehaviourConfig = Field(default_factory=BehaviourConfig, description="Behaviour policy gains and noise.")
    topics: TopicNames = Field(default_factory=TopicNames, description="Topic names.")
    sensor: SensorTiming = Field(default_factory=SensorTiming, description="Sensor rates, jitter and latency.")

    @model_validator(mode="after")
    def _sensor_faster_than_control(self) -> FleetConfig:
        source = "env.control_hz" if self.robot is None else f"the control_hz of robot {self.robot!r}"
        control_hz = load_profile(self.robot).profile.control_hz if self.robot is not None else self.env.control_hz
        if self.sensor.joint_state_hz <= control_hz:
            raise ValueError(f"sensor.joint_state_hz={self.sensor.joint_state_hz} must exceed {source}={control_hz}")
        return self
