"""Simulation: the Rotational Reacher contextual MDP, its robot and its behaviour policies.

Importing ``sim`` registers the environments with Gymnasium under the ``symgate/`` namespace:

>>> import gymnasium as gym, sim
>>> env = gym.make("symgate/RotationalReacher-v0")
"""

from gymnasium.envs.registration import register, registry

from sim.config import DomainRandomization, ReacherConfig
from sim.contexts import ContextSets

CONTINUOUS_ENV_ID = "symgate/RotationalReacher-v0"
DISCRETE_ENV_ID = "symgate/RotationalReacherDiscrete-v0"
#: The generic reach env of any robot profile: ``gym.make(ARM_ENV_ID, robot="kuka_iiwa")``.
ARM_ENV_ID = "symgate/ArmReach-v0"  # = sim.robots.env.ENV_ID

for _env_id, _entry_point in (
    (CONTINUOUS_ENV_ID, "sim.reacher:RotationalReacherEnv"),
    (DISCRETE_ENV_ID, "sim.reacher:RotationalReacherDiscreteEnv"),
    (ARM_ENV_ID, "sim.robots.env:ArmReachEnv"),
):
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point)

__all__ = ["ARM_ENV_ID", "CONTINUOUS_ENV_ID", "DISCRETE_ENV_ID", "ContextSets", "DomainRandomization", "ReacherConfig"]
