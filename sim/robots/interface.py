"""The one interface a stage drives a simulated arm through, whichever robot it is.

Every reach env symgate simulates exposes :class:`SimulatedArm`: the profile-like facts (joint
names, which joints wrap, the action interface, the control and physics rates, the context sets,
the base frame) and the driver-like calls (reset into a context, step one control period, listen
to every physics step, read the raw joint state, the command that holds the robot idle, the command
an action applies, the scene a viewer draws). A stage
gets one with :func:`simulated_arm` from a robot profile name or path, or ``None`` for the paper's
Rotational Reacher env, and never names an env class.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, SupportsFloat, runtime_checkable

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from sim.behaviour import BehaviourConfig, BehaviourPolicy, RecipeName, recipe_policies
from sim.contexts import ContextSets
from sim.reacher import ArmSceneFacts, PhysicsSample
from sim.robots.profile import ActionInterfaceName

__all__ = ["ArmSceneFacts", "PhysicsSample", "SimulatedArm", "behaviour_policies", "simulated_arm"]


@runtime_checkable
class SimulatedArm(Protocol):
    """A simulated serial arm reaching for a goal; see the module docstring."""

    observation_names: tuple[str, ...]
    action_names: tuple[str, ...]
    context: float
    goal_position: NDArray[np.float64]

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Controlled joints in action order."""
        ...

    @property
    def joint_continuous(self) -> tuple[bool, ...]:
        """Per controlled joint: True when it has no position limits (its position is wrapped to [-π, π))."""
        ...

    @property
    def action_interface(self) -> ActionInterfaceName:
        """What an action commands: joint torques, velocity targets or position targets."""
        ...

    @property
    def control_hz(self) -> int:
        """Rate at which actions are applied, Hz."""
        ...

    @property
    def physics_hz(self) -> int:
        """Physics rate, Hz (an integer multiple of ``control_hz``)."""
        ...

    @property
    def contexts(self) -> ContextSets:
        """The train / test / validation context sets (rotations about the base z axis)."""
        ...

    @property
    def reset_contexts(self) -> NDArray[np.float64]:
        """The contexts a reset without ``options={"context": θ}`` draws from, rad."""
        ...

    @property
    def base_frame(self) -> str:
        """The link the observations and the goal are expressed in."""
        ...

    @property
    def robot_name(self) -> str | None:
        """The robot profile simulated; None for the paper's Rotational Reacher env (which has none)."""
        ...

    @property
    def action_bounds(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Lower and upper limits of a continuous command, per joint, in the interface's unit."""
        ...

    @property
    def discrete_actions(self) -> NDArray[np.float64] | None:
        """The command of each discrete action index (one row per index), or None when actions are continuous."""
        ...

    def idle_command(self) -> NDArray[np.float64]:
        """The command that holds the robot idle (no torque, no motion, or stay where it is)."""
        ...

    def command(self, action: Any) -> NDArray[np.float64]:
        """The joint command an action applies, clipped to the limits (a discrete index: its torques)."""
        ...

    def scene(self) -> ArmSceneFacts:
        """The reset arm as a viewer needs it: its simulator and body, URDF, frames, joints and goal."""
        ...

    def add_physics_listener(self, listener: Callable[[PhysicsSample], None]) -> None:
        """Call ``listener`` after every physics step."""
        ...

    def joint_state(self) -> PhysicsSample:
        """The current raw joint state."""
        ...

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Start an episode (``options={"context": θ}`` in rad)."""
        ...

    def step(self, action: Any) -> tuple[NDArray[np.float32], SupportsFloat, bool, bool, dict[str, Any]]:
        """Apply an action for one control period; ``info["distance"]`` is the end effector's distance to the goal."""
        ...

    def close(self) -> None:
        """Release the physics server."""
        ...


def simulated_arm(robot: str | Path | None = None, discrete: bool = False, **kwargs: Any) -> SimulatedArm:
    """The reach env of a robot profile (``symgate/ArmReach-v0``), or of the paper's reacher when ``robot`` is None.

    Args:
        robot: A profile name or path; None: ``symgate/RotationalReacher-v0`` (its ``config`` in ``kwargs``).
        discrete: The paper reacher's discrete-action variant (``symgate/RotationalReacherDiscrete-v0``).
        **kwargs: Further keyword arguments of the env.

    Raises:
        ValueError: ``discrete`` with a robot profile (profiles have continuous actions).
        TypeError: If the registered env does not provide :class:`SimulatedArm` (never for symgate's envs).
    """
    import sim  # registers the envs

    if robot is None:
        env_id = sim.DISCRETE_ENV_ID if discrete else sim.CONTINUOUS_ENV_ID
        env = gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped
    elif discrete:
        raise ValueError("discrete actions exist only for the built-in reacher env (robot: null)")
    else:
        env = gym.make(sim.ARM_ENV_ID, disable_env_checker=True, robot=str(robot), **kwargs).unwrapped
    if not isinstance(env, SimulatedArm):
        raise TypeError(f"{type(env).__name__} does not provide the SimulatedArm interface")
    return env


def behaviour_policies(
    env: SimulatedArm, recipe: RecipeName, episodes: int, reacher_gains: BehaviourConfig | None = None
) -> list[BehaviourPolicy]:
    """The behaviour policy of each episode of a dataset recipe, for the arm ``env`` simulates.

    A profile's env gets the damped-least-squares expert with the profile's gains
    (:func:`sim.robots.expert.reach_recipe_policies`); the paper's reacher env its analytic IK + PD
    expert (:func:`sim.behaviour.recipe_policies`, gains ``reacher_gains``).
    """
    from sim.reacher import RotationalReacherEnv
    from sim.robots.env import ArmReachEnv
    from sim.robots.expert import reach_recipe_policies

    if isinstance(env, ArmReachEnv):
        return reach_recipe_policies(recipe, env.robot, env.observation_names, episodes)
    if isinstance(env, RotationalReacherEnv):
        return recipe_policies(recipe, env, episodes, reacher_gains)
    raise TypeError(f"no behaviour expert for {type(env).__name__}")
