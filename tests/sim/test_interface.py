"""One interface for every simulated arm: the paper's reacher env and any profile's env provide it."""

import numpy as np
import pytest

from sim.robots.interface import SimulatedArm, simulated_arm
from sim.robots.profile import load_profile


@pytest.mark.parametrize("robot", [None, "reacher", "kuka_iiwa"])
def test_every_env_provides_the_interface_with_its_profile_s_facts(robot: str | None) -> None:
    env = simulated_arm(robot)
    try:
        assert isinstance(env, SimulatedArm)
        if robot is None:
            assert type(env).__name__ == "RotationalReacherEnv"  # the paper's env: 2-D goal
            expected: tuple[object, ...] = ("shoulder", "elbow"), "effort", 50, 250, "base_link"
        else:
            profile = load_profile(robot).profile
            expected = (
                profile.joints,
                profile.action.interface,
                profile.control_hz,
                profile.physics_hz,
                profile.base_link,
            )
        assert (env.joint_names, env.action_interface, env.control_hz, env.physics_hz, env.base_frame) == expected
        assert len(env.joint_continuous) == len(env.joint_names)
        assert [name.split(".", 1)[1] for name in env.action_names] == list(env.joint_names)
    finally:
        env.close()


def test_the_idle_command_holds_a_velocity_controlled_arm_still() -> None:
    env = simulated_arm("kuka_iiwa")
    try:
        env.reset(seed=0, options={"context": 0.4})
        before = env.joint_state().joint_position
        for _ in range(5):
            env.step(env.idle_command())
        np.testing.assert_allclose(env.joint_state().joint_position, before, atol=1e-3)
        assert env.contexts.angles("test").size == load_profile("kuka_iiwa").profile.contexts.test_count
    finally:
        env.close()
